// Posts one message to the otp-relay (contract revision 5), signed as the relay requires:
// X-Otp-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>.
// Resolves to {ok} or {ok: false, retryable, reason}; never rejects. Reasons never carry
// the code, the text or the number (Auth0 keeps them in its logs).
// The Auth0 user id, when the event has one, is sent only as its keyed digest `subject`.
// Retry (Auth0 runs the same notification again) only when the relay surely sent nothing or
// may not have got the request: 409 (same message in flight), 429, 503, or no response at all.
// The idempotency key makes a retry after an unknown outcome harmless (at most one SMS or call).
// A 403 of problem type .../conversion-blocked (the recipient's number prefix or country is paused
// because its codes go unused: SMS pumping) is a drop, never a retry.
const crypto = require('crypto');
const http = require('http');
const https = require('https');

const RELAY_TIMEOUT_MS = 8000; // the relay answers within 6 s
const RETRYABLE_STATUSES = [409, 429, 503];
const E164 = /^\+[1-9][0-9]{6,14}$/;
const MAX_PROBLEM_BYTES = 4096; // only a 403's problem type is read, from a bounded body
const CONVERSION_BLOCKED = /(^|\/)conversion-blocked$/;

// Auth0 documents the recipient only as a "phone number" (old examples: 1-808-555-5555):
// E.164 before signing, or null when it cannot be one.
function normaliseRecipient(raw) {
  if (typeof raw !== 'string') return null;
  let number = raw.trim().replace(/[\s().-]/g, '');
  if (number.startsWith('00')) number = '+' + number.slice(2);
  else if (/^[0-9]+$/.test(number)) number = '+' + number;
  return E164.test(number) ? number : null;
}

// Lowercase hex SHA-256 of recipient, code ("" when absent), message type and text, one per
// line: the same notification (Auth0 retries it unchanged) always gets the same key.
function idempotencyKey(message) {
  const parts = [message.recipient, message.code || '', message.message_type, message.text];
  return crypto.createHash('sha256').update(parts.join('\n'), 'utf8').digest('hex');
}

function signRelayBody(key, timestamp, body) {
  const mac = crypto.createHmac('sha256', Buffer.from(key, 'utf8'));
  mac.update(timestamp + '.' + body, 'utf8');
  return 'v1=' + mac.digest('hex');
}

// Lowercase hex HMAC-SHA256(signing key, Auth0 user id): lets the relay match the tenant's log
// events to this message without ever holding the user id. null without a user.
function subjectDigest(key, userId) {
  if (typeof userId !== 'string' || userId === '') return null;
  return crypto.createHmac('sha256', Buffer.from(key, 'utf8')).update(userId, 'utf8').digest('hex');
}

function relayBody(message) {
  const body = {};
  for (const field of ['recipient', 'text', 'message_type', 'delivery_method', 'code', 'locale', 'client_ip', 'subject']) {
    const value = message[field];
    if (value !== undefined && value !== null && value !== '') body[field] = String(value);
  }
  body.idempotency_key = idempotencyKey(body);
  return JSON.stringify(body);
}

function problemType(text) {
  try {
    const problem = JSON.parse(text);
    return Boolean(problem && typeof problem.type === 'string' && CONVERSION_BLOCKED.test(problem.type));
  } catch (err) {
    return false;
  }
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
  const recipient = normaliseRecipient(message.recipient);
  if (recipient === null) {
    return Promise.resolve({ ok: false, retryable: false, reason: 'otp-relay: the recipient is not a phone number' });
  }
  const subject = subjectDigest(signingKey, message.user_id);
  const body = relayBody(Object.assign({}, message, { recipient, subject, message_type: message.message_type || 'otp_verify' }));
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
      // The status decides; only a 403's body is read, for its problem type.
      const status = response.statusCode;
      if (status === 202 || status === 200) {
        response.resume();
        finish({ ok: true });
        return;
      }
      const refused = (blocked) => finish(blocked
        ? { ok: false, retryable: false, reason: 'otp-relay: the number prefix is paused for unused codes (relay answered HTTP 403 conversion-blocked)' }
        : { ok: false, retryable: RETRYABLE_STATUSES.includes(status), reason: 'otp-relay: relay answered HTTP ' + status });
      if (status !== 403) {
        response.resume();
        refused(false);
        return;
      }
      const chunks = [];
      let size = 0;
      response.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_PROBLEM_BYTES) {
          response.destroy();
          refused(false);
        } else {
          chunks.push(chunk);
        }
      });
      response.on('end', () => refused(problemType(Buffer.concat(chunks).toString('utf8'))));
      response.on('error', () => refused(false));
      response.on('close', () => refused(false)); // cut short: after 'end' this changes nothing
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
