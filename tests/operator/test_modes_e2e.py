"""Each integration mode end to end through the operator on the cluster, against what a real
tenant does (emulated): OTPs reach 8x8 only when the tenant routes them to our code, the
PhoneRouting condition says why not and names the fix, manageRouting fixes the tenant and
deleting the channel restores it; late deploys, failing builds, a foreign provider action and a
409 right after our deploy."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from otp_operator import names
from otp_sandbox.auth0_emulator import FREE

from tests.support.channels import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_channel,
    delete_channel,
    get_channel,
    patch_channel,
    wait_condition,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def auth0_tenant(auth0_tenant):
    """The Auth0 side is what these tests are about: free tenants (burst 2 at 2/s), as a new
    user's, whose builds and deploys take seconds (the emulator's default is a fraction of one),
    unless a test asks otherwise."""
    def create(*args, **kwargs):
        kwargs.setdefault("rate_limit", FREE)
        kwargs.setdefault("build_seconds", 1.5)
        kwargs.setdefault("deploy_seconds", 2.0)
        return auth0_tenant(*args, **kwargs)
    return create

MODES = ["phone-provider", "send-phone-message", "legacy-hook"]
CODES = iter(range(200000, 999999, 7919))


def fire(ch, sms_emulator) -> tuple[str, str | None, list]:
    """One MFA SMS as the tenant routes it: (outcome, reason, SMS 8x8 got for this channel)."""
    code = f"{next(CODES):06d}"
    result = ch.tenant.fire_phone_message(recipient="+6591234567", text=f"Your code is {code}",
                                          code=code)
    sent = [m for m in sms_emulator.messages() if m.subaccount == ch.subaccount]
    return result.outcome, result.reason, sent


def create_with_warnings(api: client.ApiClient, manifest: dict) -> list[str]:
    """Create the channel; the API server's admission warnings (Warning headers)."""
    response = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, manifest, _preload_content=False)
    return list(response.headers.getlist("Warning"))


@pytest.mark.parametrize("mode", MODES)
def test_a_tenant_set_up_the_real_way_delivers_an_otp(mode, k8s_api, namespace, run_operator,
                                                      auth0_tenant, setup_channel, sms_emulator,
                                                      relay_from_deployment):
    operator = run_operator()
    tenant = auth0_tenant()
    tenant.route_phone_messages_to(mode)
    ch = setup_channel(namespace, tenant=tenant)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["auth0"]["integration"] = mode
    warnings = create_with_warnings(k8s_api, manifest)
    channel = wait_condition(k8s_api, namespace, "prod", timeout=120)
    routing = condition(channel, "PhoneRouting")
    assert (routing["status"], routing["reason"]) == ("True", "Routed")
    assert "routingChanges" not in channel["status"]["auth0"]

    relay_from_deployment(namespace, names.relay_name("prod"), ch.public_url)
    outcome, reason, sent = fire(ch, sms_emulator)
    assert outcome == "success", reason
    assert len(sent) == 1

    eol = [w for w in warnings if "end-of-life" in w]
    # The end-of-life Warning is posted before Auth0Created in the same pass.
    reasons = {e.reason for e in wait_for_event(k8s_api, namespace, "prod", "Auth0Created")}
    if mode == "legacy-hook":
        assert eol, warnings
        assert "LegacyHookEndOfLife" in reasons
        assert "end-of-life" in condition(channel, "Auth0Synced")["message"]
    else:
        assert not eol and "LegacyHookEndOfLife" not in reasons
    operator.assert_no_secrets_logged(ch.secret_values)


@pytest.mark.parametrize(("mode", "reason", "fix"), [
    ("phone-provider", "SmsFactorDisabled", "PUT /api/v2/guardian/factors/sms"),
    ("send-phone-message", "WrongPhoneExperience", "use integration phone-provider"),
    ("legacy-hook", "WrongPhoneExperience", '"phone_consolidated_experience": false'),
])
def test_wrong_routing_is_shown_then_manage_routing_fixes_it_and_delete_restores_it(
        mode, reason, fix, k8s_api, namespace, run_operator, auth0_tenant, setup_channel,
        sms_emulator, relay_from_deployment):
    run_operator()
    # A tenant on the Unified Phone Experience with the MFA SMS factor off; the legacy modes need
    # one old enough to have Auth0's legacy phone flag (a new one is refused: the test below).
    tenant = auth0_tenant(legacy_mfa_phone_provider=mode != "phone-provider")
    before = tenant.state()["phone"]
    ch = setup_channel(namespace, tenant=tenant)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["auth0"]["integration"] = mode
    create_channel(k8s_api, manifest)

    channel = wait_condition(k8s_api, namespace, "prod", "PhoneRouting", "False", reason=reason,
                             timeout=120)
    message = condition(channel, "PhoneRouting")["message"]
    assert fix in message and "manageRouting" in message
    assert condition(channel, "Ready")["reason"] == reason
    assert condition(channel, "Stalled")["status"] == "True"
    assert condition(channel, "Auth0Synced")["status"] == "True"

    relay_from_deployment(namespace, names.relay_name("prod"), ch.public_url)
    sms_emulator_before = len([m for m in sms_emulator.messages() if m.subaccount == ch.subaccount])
    outcome, _, sent = fire(ch, sms_emulator)
    assert outcome == "no-handler" and len(sent) == sms_emulator_before == 0

    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"manageRouting": True}}})
    channel = wait_condition(k8s_api, namespace, "prod", timeout=120)
    assert condition(channel, "PhoneRouting")["status"] == "True"
    changed = channel["status"]["auth0"]["routingChanges"]
    assert changed["smsFactor"] is False and changed["messageTypes"] == []
    wait_for_event(k8s_api, namespace, "prod", "Auth0RoutingChanged")
    outcome, reason_text, sent = fire(ch, sms_emulator)
    assert outcome == "success", reason_text
    assert len(sent) == 1

    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=90, what="deletion")
    assert tenant.state()["phone"] == before


def test_manage_routing_on_a_new_tenant_in_a_legacy_mode_is_refused_before_any_write(
        k8s_api, namespace, run_operator, auth0_tenant, setup_channel, sms_emulator):
    run_operator()
    tenant = auth0_tenant()  # new: no legacy phone flag, which only Auth0 Support can set
    before = tenant.state()
    ch = setup_channel(namespace, tenant=tenant)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["auth0"] |= {"integration": "send-phone-message", "manageRouting": True}
    create_channel(k8s_api, manifest)
    channel = wait_condition(k8s_api, namespace, "prod", "PhoneRouting", "False",
                             reason="LegacyPhoneProviderNotAllowed", timeout=120)
    message = condition(channel, "PhoneRouting")["message"]
    assert "Auth0 Support" in message and "integration phone-provider" in message
    assert condition(channel, "Stalled")["status"] == "True"
    assert "routingChanges" not in (channel["status"].get("auth0") or {})
    assert tenant.writes() == [] and tenant.state() == before


def test_a_passwordless_connection_on_twilio_is_not_routed_until_manage_routing_moves_it(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, relay_from_deployment):
    run_operator()
    ch = setup_channel(namespace)  # MFA routed to phone-provider the real way
    twilio = {"provider": "twilio", "twilio_sid": "ACx", "twilio_token": "tw-token-1",
              "from": "+15550001111", "use_phone_provider": False}
    ch.tenant.set_sms_connections({"name": "sms", "options": twilio})
    before = ch.tenant.state()["connections"]
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, namespace, "prod", "PhoneRouting", "False",
                             reason="PasswordlessNotRouted", timeout=120)
    message = condition(channel, "PhoneRouting")["message"]
    assert "Use Tenant-Level Messaging Provider" in message and "manageRouting" in message
    flows = {f["flow"]: f for f in channel["status"]["auth0"]["routing"]}
    assert flows["mfa"]["routed"] == "true" and flows["passwordless"]["routed"] == "false"
    assert flows["passwordless"]["connection"] == "sms"
    relay_from_deployment(namespace, names.relay_name("prod"), ch.public_url)
    login = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 515151",
                                         code="515151", connection="sms")
    assert login.outcome == "no-handler" and "Twilio" in login.reason
    assert [m for m in sms_emulator.messages() if m.subaccount == ch.subaccount] == []

    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"manageRouting": True}}})
    channel = wait_condition(k8s_api, namespace, "prod", "PhoneRouting", "True", timeout=120)
    assert channel["status"]["auth0"]["routingChanges"] == {"usePhoneProvider": {before[0]["id"]: False}}
    wait_for_event(k8s_api, namespace, "prod", "Auth0RoutingChanged", timeout=30)
    login = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 525252",
                                         code="525252", connection="sms")
    assert login.outcome == "success", login.reason
    assert [m.text for m in sms_emulator.messages() if m.subaccount == ch.subaccount] == [
        "Your code is 525252"]

    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=120,
             what="the channel gone")
    assert ch.tenant.state()["connections"] == before  # the flag back, the credentials kept


def test_a_failing_build_is_reported_without_a_retry_loop_and_recovers(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    ch.tenant.fail_builds("npm ERR! code E503 registry unavailable")
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, namespace, "prod", "Auth0Synced", "False",
                             reason="Auth0BuildFailed", timeout=120)
    assert "npm ERR! code E503" in condition(channel, "Auth0Synced")["message"]
    assert condition(channel, "Stalled")["status"] == "True"
    assert not condition(channel, "Reconciling")
    writes = ch.tenant.writes()
    assert [w.path for w in writes if w.path.endswith("/deploy")] == []
    assert len([w for w in writes if w.method == "POST" and w.path.endswith("/actions")]) == 1

    ch.tenant.fail_builds(None)
    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"name": "otp-relay-shop"}}})
    wait_condition(k8s_api, namespace, "prod", timeout=120)


def _foreign_provider_action(tenant) -> str:
    from tests.support.auth0 import Dashboard, bind_foreign_provider_action

    dashboard = Dashboard(tenant, tenant.clients[0])
    try:
        return bind_foreign_provider_action(dashboard)
    finally:
        dashboard.http.close()


def test_a_foreign_provider_action_is_refused_then_replaced_when_told(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, relay_from_deployment):
    run_operator()
    ch = setup_channel(namespace)
    foreign = _foreign_provider_action(ch.tenant)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason="Auth0Conflict",
                             timeout=120)
    message = condition(channel, "Ready")["message"]
    assert "'Custom Phone Provider'" in message and "Reset" in message
    assert "replaceForeignAction" in message

    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"replaceForeignAction": True}}})
    channel = wait_condition(k8s_api, namespace, "prod", timeout=120)
    bound = ch.tenant.state()["bindings"]["custom-phone-provider"]
    assert [b["action_id"] for b in bound] == [channel["status"]["auth0"]["actionId"]]
    assert foreign != channel["status"]["auth0"]["actionId"]
    relay_from_deployment(namespace, names.relay_name("prod"), ch.public_url)
    outcome, reason, sent = fire(ch, sms_emulator)
    assert outcome == "success", reason
    assert len(sent) == 1


def test_a_409_right_after_the_deploy_is_transient(k8s_api, namespace, run_operator, setup_channel,
                                                   sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    ch.tenant.fail_next(409, count=3, method="PATCH", path_suffix="/custom-phone-provider/bindings")
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=120)
    statuses = [r.status for r in ch.tenant.requests()
                if r.method == "PATCH" and r.path.endswith("/custom-phone-provider/bindings")]
    assert statuses == [409, 409, 409, 200]
    reasons = {e.reason for e in wait_for_event(k8s_api, namespace, "prod", "Auth0Created")}
    assert "Auth0Conflict" not in reasons and "Auth0Unavailable" not in reasons
    assert json.dumps(get_channel(k8s_api, namespace, "prod")["status"]).count("Stalled") == 0
