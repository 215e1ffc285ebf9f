// Auth0 custom phone provider: every phone message of the tenant goes through the relay.
// 429/503/timeouts are transient (Auth0 retries later); anything else is final.
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  const notification = event.notification || {};
  const deliveryMethod = notification.delivery_method || 'text';
  const outcome = await postToRelay(event.secrets, {
    recipient: notification.recipient,
    text: deliveryMethod === 'voice' ? notification.as_voice : notification.as_text,
    message_type: notification.message_type,
    delivery_method: deliveryMethod,
    code: notification.code,
    locale: notification.locale,
    client_ip: event.request && event.request.ip,
    user_id: event.user && event.user.user_id,
  });
  if (outcome.ok) return;
  if (outcome.retryable) {
    api.notification.retry(outcome.reason);
  } else {
    api.notification.drop(outcome.reason);
  }
};
