"""``fire_phone_message``: the registered code runs in Node.js the way Auth0 would run it, and
only along the path a real tenant routes phone messages."""

from __future__ import annotations

import pytest

from tests.fixtures.auth0 import route_phone_messages

from .conftest import deployed_action, wait_built, wait_deployed

CUSTOM = {"name": "custom", "disabled": False,
          "configuration": {"delivery_methods": ["text"]}, "credentials": {}}

# Decides by the code it is given, after checking the event has the fields the docs promise.
DECIDING_PROVIDER = r"""
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  const n = event.notification;
  const expected = { recipient: '+6591234567', as_text: 'Your code is ' + n.code,
                     delivery_method: 'text', message_type: 'otp_verify', locale: 'en' };
  for (const [key, value] of Object.entries(expected)) {
    if (n[key] !== value) throw new Error(`event.notification.${key} was ${n[key]}`);
  }
  if (event.secrets.RELAY_URL !== 'https://relay.example/prod') throw new Error('no secret');
  if (!event.request.ip || !event.tenant.id || !event.client.client_id) throw new Error('ctx');
  console.log('handling message for ...' + n.recipient.slice(-4));
  if (n.code === '222222') api.notification.retry('relay busy');
  else if (n.code === '333333') api.notification.drop('recipient refused');
  else if (n.code === '444444') throw new Error('relay exploded');
};
"""


async def _bind(api, trigger, *action_ids):
    answer = await api.patch(f"/actions/triggers/{trigger}/bindings", json={"bindings": [
        {"ref": {"type": "action_id", "value": action_id}} for action_id in action_ids]})
    assert answer.status_code == 200, answer.text


async def _custom_provider(api, tenant, code=DECIDING_PROVIDER, name="otp-relay-shop-prod",
                           secrets=None):
    """The real setup: deployed action bound to custom-phone-provider, a custom provider, the
    tenant on the Unified Phone Experience with the MFA SMS factor on."""
    action = await deployed_action(api, name, "custom-phone-provider", code,
                                   secrets or {"RELAY_URL": "https://relay.example/prod"})
    await _bind(api, "custom-phone-provider", action["id"])
    assert (await api.post("/branding/phone/providers", json=CUSTOM)).status_code == 201
    route_phone_messages(tenant, "phone-provider")
    return action


async def test_custom_provider_action_outcomes(api, tenant):
    await _custom_provider(api, tenant)
    outcomes = {}
    for code in ("111111", "222222", "333333", "444444"):
        result = await tenant.fire_phone_message_async(text=f"Your code is {code}", code=code)
        outcomes[code] = (result.outcome, result.reason)
        assert result.ran == ["otp-relay-shop-prod"]
        assert result.duration_ms > 0
    assert outcomes == {"111111": ("success", None), "222222": ("retry", "relay busy"),
                        "333333": ("drop", "recipient refused"),
                        "444444": ("error", "relay exploded")}
    assert tenant.fire_phone_message(code="111111", text="Your code is 111111").logs == [
        "handling message for ...4567"]


async def test_custom_provider_runs_only_while_the_provider_is_enabled(api, tenant):
    await _custom_provider(api, tenant)
    provider_id = tenant.state()["phone_providers"][0]["id"]
    await api.patch(f"/branding/phone/providers/{provider_id}", json={"disabled": True})
    assert tenant.fire_phone_message().outcome == "no-handler"
    assert tenant.fire_phone_message(trigger="custom-phone-provider").outcome == "no-handler"


def test_nothing_registered_means_no_handler(tenant):
    result = tenant.fire_phone_message()
    assert result.outcome == "no-handler"
    assert result.ran == []


async def test_the_deployed_version_runs_not_the_draft(api, tenant):
    retry = ("exports.onExecuteCustomPhoneProvider = async (e, api) => "
             "api.notification.retry(e.secrets.RELAY_URL);")
    action = await _custom_provider(api, tenant, code=retry)
    await api.patch(f"/actions/actions/{action['id']}", json={
        "code": retry.replace("retry", "drop"),
        "secrets": [{"name": "RELAY_URL", "value": "https://new.example"}]})
    first = tenant.fire_phone_message()
    assert (first.outcome, first.reason) == ("retry", "https://relay.example/prod")
    await wait_built(api, action["id"])
    version = (await api.post(f"/actions/actions/{action['id']}/deploy")).json()
    assert tenant.fire_phone_message().reason == "https://relay.example/prod"  # deploying
    await wait_deployed(api, action["id"], version["id"])
    second = tenant.fire_phone_message()
    assert (second.outcome, second.reason) == ("drop", "https://new.example")


async def test_retry_runs_the_same_notification_again_and_the_last_decision_counts(api, tenant):
    flaky = r"""
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  api.notification.drop('first call');
  api.notification.retry('last call wins');
};"""
    await _custom_provider(api, tenant, code=flaky)
    once = tenant.fire_phone_message()
    assert (once.outcome, once.reason, once.attempts) == ("retry", "last call wins", 1)
    again = tenant.fire_phone_message(retries=2)
    assert (again.outcome, again.attempts, len(again.ran)) == ("retry", 3, 3)


async def test_send_phone_message_runs_the_bound_chain_in_order(api, tenant):
    foreign = await deployed_action(api, "audit", "send-phone-message",
                                    "exports.onExecuteSendPhoneMessage = async (event) => "
                                    "console.log('audit ' + event.message_options.action);")
    ours = await deployed_action(api, "ours", "send-phone-message", r"""
exports.onExecuteSendPhoneMessage = async (event) => {
  const m = event.message_options;
  if (m.recipient !== '+6598765432' || m.message_type !== 'sms' || m.code !== '654321'
      || m.text !== 'Code 654321') throw new Error('bad message_options ' + JSON.stringify(m));
  if (event.secrets.FAIL === 'yes') throw new Error('relay answered 502');
};""", {"FAIL": "yes"})
    await _bind(api, "send-phone-message", foreign["id"], ours["id"])
    route_phone_messages(tenant, "send-phone-message")
    result = tenant.fire_phone_message(recipient="+6598765432", text="Code 654321",
                                       code="654321", message_type="otp_enroll")
    assert (result.outcome, result.reason) == ("error", "relay answered 502")
    assert result.ran == ["audit", "ours"]
    assert result.logs == ["audit enrollment"]
    unbound = await api.patch("/actions/triggers/send-phone-message/bindings",
                              json={"bindings": []})
    assert unbound.status_code == 200
    assert tenant.fire_phone_message().outcome == "no-handler"


async def test_enabled_hook_runs_with_webtask_secrets(api, tenant):
    hook = (await api.post("/hooks", json={"name": "otp-hook", "triggerId": "send-phone-message",
                                           "enabled": True, "script": r"""
module.exports = function (recipient, text, context, cb) {
  if (context.message_type !== 'sms' || !context.user || context.code !== '123456')
    return cb(new Error('bad context'));
  if (recipient !== '+6591234567' || text !== 'Your code is 123456') return cb(new Error('args'));
  if (context.webtask.secrets.MODE === 'fail') return cb(new Error('relay said no'));
  cb(null, {});
};"""})).json()
    await api.post(f"/hooks/{hook['id']}/secrets", json={"MODE": "ok"})
    route_phone_messages(tenant, "legacy-hook")
    assert tenant.fire_phone_message().outcome == "success"
    await api.patch(f"/hooks/{hook['id']}/secrets", json={"MODE": "fail"})
    failed = tenant.fire_phone_message(trigger="hook")
    assert (failed.outcome, failed.reason) == ("error", "relay said no")
    await api.patch(f"/hooks/{hook['id']}", json={"enabled": False})
    assert tenant.fire_phone_message(trigger="hook").outcome == "no-handler"


async def test_the_tenant_routing_decides_which_code_runs(api, tenant):
    hook = "module.exports = (r, t, c, cb) => cb(new Error('hook ran'));"
    await api.post("/hooks", json={"name": "h", "triggerId": "send-phone-message",
                                   "enabled": True, "script": hook})
    await _custom_provider(api, tenant)
    # Unified Phone Experience: the custom provider's bound action, never the hook.
    result = tenant.fire_phone_message()
    assert (result.outcome, result.ran) == ("success", ["otp-relay-shop-prod"])
    assert tenant.fire_phone_message(trigger="hook").outcome == "no-handler"
    # Off it with phone-message-hook: the hook first, and the provider's action never.
    route_phone_messages(tenant, "legacy-hook")
    legacy = tenant.fire_phone_message()
    assert (legacy.outcome, legacy.reason, legacy.ran) == ("error", "hook ran", ["h"])
    assert tenant.fire_phone_message(trigger="custom-phone-provider").outcome == "no-handler"


@pytest.mark.parametrize(("routing", "fragment"), [
    ({"sms_factor": False}, "SMS factor is disabled"),
    ({"message_types": ["voice"]}, "do not include 'sms'"),
    ({"phone_consolidated_experience": False, "selected_provider": "auth0",
      "legacy_mfa_phone_provider": True}, "not 'phone-message-hook'"),
    ({"phone_consolidated_experience": False}, "lacks the legacy_mfa_phone_provider flag"),
])
async def test_nothing_runs_when_the_routing_is_wrong_and_the_reason_says_why(
        api, tenant, routing, fragment):
    await _custom_provider(api, tenant)
    tenant.set_phone(**routing)
    result = tenant.fire_phone_message()
    assert (result.outcome, result.ran) == ("no-handler", [])
    assert fragment in result.reason


async def test_an_unbound_custom_phone_provider_action_never_runs(api, tenant):
    await _custom_provider(api, tenant)
    await _bind(api, "custom-phone-provider")
    result = tenant.fire_phone_message()
    assert result.outcome == "no-handler" and "no deployed action bound" in result.reason


async def test_time_limit_and_broken_code_are_errors(api, tenant):
    tenant.set_runner_timeout(1.0)
    await _custom_provider(api, tenant, code="exports.onExecuteCustomPhoneProvider = () => "
                                             "new Promise(() => {});")
    hung = tenant.fire_phone_message()
    assert (hung.outcome, hung.reason) == ("error", "timed out after 1000 ms")
    broken = await deployed_action(api, "broken", "send-phone-message", "null.x;")
    await _bind(api, "send-phone-message", broken["id"])
    route_phone_messages(tenant, "send-phone-message")
    result = tenant.fire_phone_message(trigger="send-phone-message")
    assert result.outcome == "error"
    assert "Cannot read properties of null" in result.reason


async def test_code_reaches_sandbox_https_servers_through_the_sandbox_ca(api, tenant):
    probe = r"""
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  const response = await fetch(event.secrets.RELAY_URL + '/api/v2/hooks');
  api.notification.retry('status ' + response.status);
};"""
    await _custom_provider(api, tenant, code=probe, secrets={"RELAY_URL": tenant.base_url})
    result = tenant.fire_phone_message()
    assert (result.outcome, result.reason) == ("retry", "status 401")


async def test_tenant_port_serves_the_sandbox_phone_message_endpoint(api, tenant):
    import httpx  # noqa: PLC0415

    await _custom_provider(api, tenant)
    async with httpx.AsyncClient(timeout=30, verify=tenant.ssl_context) as http:
        answer = await http.post(f"{tenant.base_url}/__sandbox/phone-message", json={
            "recipient": "+6591234567", "text": "Your code is 333333", "code": "333333"})
        invalid = await http.post(f"{tenant.base_url}/__sandbox/phone-message",
                                  json={"recipient": "call me maybe", "text": "x"})
    assert answer.status_code == 200
    assert answer.json()["outcome"] == "drop"
    assert invalid.status_code == 400
    assert "E.164" in invalid.json()["message"]
    assert all(not r.path.startswith("/__sandbox") for r in tenant.requests())


# The test message of /try: checks what the emulator promises about it (no code, the fixed
# text), then decides by the recipient.
TRYING_PROVIDER = r"""
exports.onExecuteCustomPhoneProvider = async (event, api) => {
  const n = event.notification;
  if ('code' in n && n.code !== undefined) throw new Error('a test message has no code');
  if (n.message_type !== 'otp_verify' || !n.as_text.startsWith('This is a test message')) {
    throw new Error('unexpected test message');
  }
  if (n.recipient === '+6591230001') api.notification.drop('relay refused');
  else if (n.recipient === '+6591230002') api.notification.retry('relay busy');
  else if (n.recipient === '+6591230003') throw new Error('relay exploded');
};
"""


async def test_try_sends_a_test_message_through_the_bound_action(api, tenant, sdk):
    """``branding.phone.providers.test`` (POST .../try) runs the custom provider's action like a
    phone message; a drop, a retry or a failure is answered 400 naming the outcome."""
    await _custom_provider(api, tenant, code=TRYING_PROVIDER)
    provider_id = tenant.state()["phone_providers"][0]["id"]
    sent = await sdk.branding.phone.providers.test(provider_id, to="+6591230000", delivery_method="text")
    assert (sent.code, sent.message) == (202, "Phone notification sent")
    for to, outcome in (("+6591230001", "drop"), ("+6591230002", "retry"), ("+6591230003", "error")):
        answer = await api.post(f"/branding/phone/providers/{provider_id}/try", json={"to": to})
        assert answer.status_code == 400, (to, answer.text)
        body = answer.json()
        assert body["errorCode"] == "phone_provider_test_failed" and f"({outcome})" in body["message"]
    await api.patch(f"/branding/phone/providers/{provider_id}", json={"disabled": True})
    answer = await api.post(f"/branding/phone/providers/{provider_id}/try", json={"to": "+6591230000"})
    assert answer.status_code == 400 and "disabled" in answer.json()["message"]


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"to": "6591230000"}, 400, "'to'"),
    ({"to": "+6591230000", "delivery_method": "fax"}, 400, "'delivery_method'"),
    ({"to": "+6591230000", "text": "hi"}, 400, "Additional properties"),
    ({}, 400, "'to'"),
])
async def test_try_refuses_a_bad_body(api, tenant, body, status, fragment):
    await _custom_provider(api, tenant, code=TRYING_PROVIDER)
    provider_id = tenant.state()["phone_providers"][0]["id"]
    answer = await api.post(f"/branding/phone/providers/{provider_id}/try", json=body)
    assert (answer.status_code, answer.json()["errorCode"]) == (status, "invalid_body")
    assert fragment in answer.json()["message"]


async def test_try_an_unknown_provider_is_404(api, tenant):
    answer = await api.post("/branding/phone/providers/pro_nope/try", json={"to": "+6591230000"})
    assert (answer.status_code, answer.json()["errorCode"]) == (404, "phone_provider_not_found")
