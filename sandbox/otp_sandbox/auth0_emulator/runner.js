'use strict';
// Runs one Auth0 Action or legacy Hook the way Auth0 would, then prints one result line.
// Input (stdin, JSON): {kind: "action"|"hook", trigger, code, event?, hook_args?, timeout_ms}.
// Output (stdout): "@@otp-sandbox-result " + {outcome, reason, logs}.
const fs = require('fs');
const os = require('os');
const path = require('path');
const util = require('util');

const MARK = '@@otp-sandbox-result ';
const HANDLERS = {
  'custom-phone-provider': 'onExecuteCustomPhoneProvider',
  'send-phone-message': 'onExecuteSendPhoneMessage',
};
const MAX_REASON = 1024;
const MAX_LOG_LINES = 200;

const job = JSON.parse(fs.readFileSync(0, 'utf8'));
const logs = [];
const write = process.stdout.write.bind(process.stdout);
for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
  console[level] = (...args) => {
    if (logs.length < MAX_LOG_LINES) logs.push(util.format(...args));
  };
}

let finished = false;
function finish(outcome, reason) {
  if (finished) return;
  finished = true;
  const line = MARK + JSON.stringify({ outcome, reason: reason ?? null, logs }) + '\n';
  write(line, () => process.exit(0));
}
function describe(err) {
  if (err && typeof err.message === 'string') return err.message;
  return String(err);
}

process.on('uncaughtException', (err) => finish('error', describe(err)));
process.on('unhandledRejection', (err) => finish('error', describe(err)));
setTimeout(() => finish('error', `timed out after ${job.timeout_ms} ms`), job.timeout_ms);

function load(code, filename) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otp-sandbox-auth0-'));
  const file = path.join(dir, filename);
  try {
    fs.writeFileSync(file, code);
    return require(file);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function cacheApi() {
  const store = new Map();
  return {
    get: (key) => (store.has(key) ? { value: store.get(key) } : undefined),
    set: (key, value) => { store.set(key, value); return { type: 'success' }; },
    delete: (key) => { store.delete(key); return { type: 'success' }; },
  };
}

async function runAction() {
  const handlerName = HANDLERS[job.trigger];
  const mod = load(job.code, 'action.js');
  const handler = mod && mod[handlerName];
  if (typeof handler !== 'function') {
    throw new Error(`exports.${handlerName} is not a function`);
  }
  let decision = null;
  const decide = (outcome) => (reason) => {
    // Called several times, the last call counts (as on Auth0).
    decision = { outcome, reason: String(reason ?? '').slice(0, MAX_REASON) };
  };
  const api = { cache: cacheApi() };
  if (job.trigger === 'custom-phone-provider') {
    api.notification = { drop: decide('drop'), retry: decide('retry') };
  }
  await handler(job.event, api);
  if (decision) finish(decision.outcome, decision.reason);
  else finish('success', null);
}

function runHook() {
  const hook = load(job.code, 'hook.js');
  if (typeof hook !== 'function') throw new Error('module.exports is not a function');
  const { recipient, text, context } = job.hook_args;
  hook(recipient, text, context, (err) => {
    if (err) finish('error', describe(err));
    else finish('success', null);
  });
}

(async () => {
  try {
    if (job.kind === 'hook') runHook();
    else await runAction();
  } catch (err) {
    finish('error', describe(err));
  }
})();
