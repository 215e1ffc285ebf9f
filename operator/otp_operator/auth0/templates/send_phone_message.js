// Auth0 send-phone-message (MFA SMS/voice): a thrown error makes Auth0 report the failure.
exports.onExecuteSendPhoneMessage = async (event, api) => {
  const options = event.message_options || {};
  const outcome = await postToRelay(event.secrets, {
    recipient: options.recipient,
    text: options.text,
    message_type: options.action === 'enrollment' ? 'otp_enroll' : 'otp_verify',
    delivery_method: options.message_type === 'voice' ? 'voice' : 'text',
    code: options.code,
    locale: event.request && event.request.language,
    client_ip: event.request && event.request.ip,
    user_id: event.user && event.user.user_id,
  });
  if (!outcome.ok) throw new Error(outcome.reason);
};
