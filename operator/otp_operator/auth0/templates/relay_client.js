// Posts one message to the otp-relay, signed as the relay's contract requires:
// X-Otp-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>.
// Resolves to {ok} or {ok: false, retryable, reason}; never rejects. Reasons never carry
// the code, the text or the number (Auth0 keeps them in its logs).
const crypto = require('crypto');
const http = require('http');
const https = require('https');

const RELAY_TIMEOUT_MS = 8000;
const RETRYABLE_STATUSES = [429, 503];

function signRelayBody(key, timestamp, body) {
  const mac = crypto.createHmac('sha256', Buffer.from(key, 'utf8'));
  mac.update(timestamp + '.' + body, 'utf8');
  return 'v1=' + mac.digest('hex');
}

function relayBody(message) {
  const body = {};
  for (const field of ['recipient', 'text', 'message_type', 'delivery_method', 'code', 'locale', 'client_ip']) {
    const value = message[field];
    if (value !== undefined && value !== null && value !== '') body[field] = String(value);
  }
  return JSON.stringify(body);
}

function postToRelay(secrets, message) {
  const relayUrl = secrets && secrets.RELAY_URL;
  const signingKey = secrets && secrets.RELAY_SIGNING_KEY;
  if (!relayUrl || !signingKey) {
    return Promise.resolve({ ok: false, retryable: false, reason: 'otp-relay: secrets RELAY_URL and RELAY_SIGNING_KEY are required' });
  }
  let target;
  try {
    target = new URL(relayUrl.replace(/\/+$/, '') + '/v1/messages');
  } catch (err) {
    return Promise.resolve({ ok: false, retryable: false, reason: 'otp-relay: RELAY_URL is not a valid URL' });
  }
  const body = relayBody(message);
  const timestamp = String(Math.floor(Date.now() / 1000));
  const transport = target.protocol === 'http:' ? http : https;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome) => {
      if (!settled) {
        settled = true;
        resolve(outcome);
      }
    };
    const request = transport.request(target, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'X-Otp-Timestamp': timestamp,
        'X-Otp-Signature': signRelayBody(signingKey, timestamp, body),
      },
      timeout: RELAY_TIMEOUT_MS,
    }, (response) => {
      response.resume();
      response.on('end', () => {
        const status = response.statusCode;
        if (status === 202 || status === 200) {
          finish({ ok: true });
        } else {
          finish({
            ok: false,
            retryable: RETRYABLE_STATUSES.includes(status),
            reason: 'otp-relay: relay answered HTTP ' + status,
          });
        }
      });
      response.on('error', () => finish({ ok: false, retryable: true, reason: 'otp-relay: relay connection broke' }));
    });
    request.on('timeout', () => {
      request.destroy();
      finish({ ok: false, retryable: true, reason: 'otp-relay: relay did not answer within ' + RELAY_TIMEOUT_MS / 1000 + ' s' });
    });
    request.on('error', (err) => {
      finish({ ok: false, retryable: true, reason: 'otp-relay: relay unreachable (' + (err.code || 'network error') + ')' });
    });
    request.end(body);
  });
}
