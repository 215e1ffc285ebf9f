// DEPRECATED: Auth0 Hooks reached end of life on 2026-11-18. Use the phone-provider integration.
// Legacy send-phone-message Hook for tenants that still run hooks.
module.exports = function (recipient, text, context, cb) {
  const secrets = (context && context.webtask && context.webtask.secrets) || {};
  postToRelay(secrets, {
    recipient: recipient,
    text: text,
    message_type: context && context.action === 'enrollment' ? 'otp_enroll' : 'otp_verify',
    delivery_method: context && context.message_type === 'voice' ? 'voice' : 'text',
    code: context && context.code,
    locale: context && context.language,
    client_ip: context && context.ip,
    user_id: context && context.user && context.user.user_id,
  }).then(
    (outcome) => (outcome.ok ? cb(null, {}) : cb(new Error(outcome.reason))),
    () => cb(new Error('otp-relay: unexpected failure')),
  );
};
