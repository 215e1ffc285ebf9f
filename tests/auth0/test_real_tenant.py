"""Auth0Sync against what a real tenant does (emulated): phone routing checked and, when asked,
changed and restored; asynchronous deploys; failing builds; a foreign action bound to
custom-phone-provider; a 409 right after our own deploy. OTPs go through Node.js, a real relay
and the 8x8 emulator."""

from __future__ import annotations

import time

import pytest

from otp_operator.auth0 import (BUILD_FAILED, CONFLICT, UNAVAILABLE, Auth0Error, Auth0Sync,
                                RoutingRefused)
from tests.support.auth0 import Setup, bind_foreign_provider_action, desired_for
from otp_sandbox.auth0_emulator.launcher import ROUTING_FOR_MODE
from tests.fixtures.auth0 import route_phone_messages

MODES = ["phone-provider", "send-phone-message", "legacy-hook"]
NAME = "otp-relay-shop-prod"


def fire(setup: Setup, sms_emulator) -> tuple[str, str | None, int]:
    """One MFA SMS as the tenant routes it; (outcome, reason, SMS that reached 8x8)."""
    sms_emulator.clear()
    code = f"{int(time.time() * 1000) % 1_000_000:06d}"
    result = setup.tenant.fire_phone_message(text=f"Your verification code is {code}", code=code)
    return result.outcome, result.reason, len(sms_emulator.messages())


@pytest.mark.parametrize(("mode", "reason", "fix"), [
    ("phone-provider", "SmsFactorDisabled", 'PUT /api/v2/guardian/factors/sms {"enabled": true}'),
    # A new tenant lacks the legacy phone flag: no setting of its own can route MFA to a hook.
    ("send-phone-message", "LegacyPhoneProviderNotAllowed", "ask Auth0 Support"),
    ("legacy-hook", "LegacyPhoneProviderNotAllowed", "use integration phone-provider"),
])
async def test_a_new_tenant_does_not_route_otps_and_the_verdict_names_the_fix(
        mode, reason, fix, setup, relay, sms_emulator):
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for(mode, relay.url))
    assert result.routing is not None and not result.routing.ok
    assert result.routing.reason == reason
    assert fix in result.routing.message and "manageRouting" in result.routing.message
    outcome, _, sent = fire(setup, sms_emulator)
    assert (outcome, sent) == ("no-handler", 0)


@pytest.mark.parametrize("mode", MODES)
async def test_routing_set_up_the_real_way_is_reported_routed(mode, setup, relay, sms_emulator):
    route_phone_messages(setup.tenant, mode)
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for(mode, relay.url))
    assert result.routing is not None and result.routing.ok, result.routing
    assert "routingChanges" not in result.as_status()
    assert fire(setup, sms_emulator)[::2] == ("success", 1)


@pytest.mark.parametrize("mode", MODES)
async def test_manage_routing_fixes_the_tenant_records_it_and_removal_restores_it(
        mode, setup, relay, sms_emulator):
    if mode != "phone-provider":
        setup.tenant.set_phone(legacy_mfa_phone_provider=True)  # an old tenant: legacy path allowed
    before = setup.tenant.state()["phone"]
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for(mode, relay.url, manage_routing=True))
        assert result.routing is not None and result.routing.ok, result.routing
        changed = result.as_status()["routingChanges"]
        assert changed["smsFactor"] is False and changed["messageTypes"] == []
        after = setup.tenant.state()["phone"]
        assert {k: after[k] for k in ROUTING_FOR_MODE[mode]} == ROUTING_FOR_MODE[mode]
        assert fire(setup, sms_emulator)[::2] == ("success", 1)

        setup.tenant.clear_requests()
        again = await sync.ensure(desired_for(mode, relay.url, manage_routing=True),
                                  recorded=result.as_status())
        assert again.writes == 0 and again.as_status()["routingChanges"] == changed

        removed = await sync.remove("shop/prod", mode, NAME, recorded=again.as_status())
    assert any("restored" in note for note in removed)
    assert setup.tenant.state()["phone"] == before


async def test_missing_routing_scopes_are_listed(auth0_tenant, relay):
    from otp_operator.auth0 import FORBIDDEN, Auth0Credentials
    from otp_sandbox.auth0_emulator import ALL_SCOPES
    from tests.fixtures.auth0 import make_client

    client = make_client(scopes=tuple(s for s in ALL_SCOPES if "tenant_settings" not in s
                                      and s != "update:guardian_factors"))
    tenant = auth0_tenant(clients=[client])
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
        assert caught.value.reason == FORBIDDEN and "read:tenant_settings" in caught.value.message
        with pytest.raises(Auth0Error) as managing:
            await sync.ensure(desired_for("phone-provider", relay.url, manage_routing=True))
    for scope in ("read:tenant_settings", "update:tenant_settings", "update:guardian_factors"):
        assert scope in managing.value.message
    assert [r.path for r in tenant.requests()] == ["/oauth/token"]


@pytest.mark.parametrize("mode", ["phone-provider", "send-phone-message"])
async def test_a_deploy_that_finishes_late_is_waited_for_before_binding(
        mode, setup, relay, sms_emulator):
    setup.tenant.set_deploy_seconds(3)
    route_phone_messages(setup.tenant, mode)
    async with setup.sync() as sync:
        await sync.ensure(desired_for(mode, relay.url))
    log = [(r.method, r.path.rsplit("/", 2)[-2:], r.status) for r in setup.tenant.requests()]
    assert all(status < 400 for *_, status in log), log
    assert fire(setup, sms_emulator)[::2] == ("success", 1)


async def test_a_failing_build_is_reported_and_the_serving_version_stays(setup, relay, sms_emulator):
    route_phone_messages(setup.tenant, "phone-provider")
    async with setup.sync() as sync:
        first = await sync.ensure(desired_for("phone-provider", relay.url))
        setup.tenant.fail_builds("npm ERR! 503 Service Unavailable - GET registry")
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url, signing_key="other-key-0002"),
                              recorded=first.as_status())
    assert caught.value.reason == BUILD_FAILED
    assert "npm ERR! 503" in caught.value.message and "previous version" in caught.value.message
    assert not [r for r in setup.tenant.requests() if r.path.endswith("/deploy")][1:]
    assert fire(setup, sms_emulator)[::2] == ("success", 1)  # the old version still serves


async def test_a_foreign_bound_provider_action_is_refused_then_replaced_when_told(
        setup, relay, sms_emulator):
    foreign = bind_foreign_provider_action(setup.dashboard)
    route_phone_messages(setup.tenant, "phone-provider")
    setup.tenant.clear_requests()
    async with setup.sync() as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
        assert caught.value.reason == CONFLICT
        assert "'Custom Phone Provider'" in caught.value.message and "Reset" in caught.value.message
        assert setup.tenant.writes() == []
        result = await sync.ensure(desired_for("phone-provider", relay.url,
                                               replace_foreign_action=True))
    bound = setup.tenant.state()["bindings"]["custom-phone-provider"]
    assert [b["action_id"] for b in bound] == [result.action_id] and result.action_id != foreign
    assert fire(setup, sms_emulator)[::2] == ("success", 1)


async def test_a_409_right_after_our_deploy_is_transient(setup, relay, sms_emulator):
    route_phone_messages(setup.tenant, "phone-provider")
    tenant = setup.tenant
    tenant.fail_next(409, count=2, method="PATCH", path_suffix="/custom-phone-provider/bindings")
    async with setup.sync() as sync:
        created = await sync.ensure(desired_for("phone-provider", relay.url))
        assert [r.status for r in tenant.requests() if r.path.endswith("/bindings")
                and r.method == "PATCH"] == [409, 409, 200]
        assert fire(setup, sms_emulator)[::2] == ("success", 1)
        # Auth0's "deployed action not found" for the provider, right after a deploy: waited out.
        setup.dashboard("PATCH", f"/branding/phone/providers/{created.provider_id}",
                        json={"disabled": True})
        tenant.fail_next(400, count=1, method="PATCH", path_suffix=created.provider_id,
                         error_code="custom_email_provider_deployed_action_not_found")
        await sync.ensure(desired_for("phone-provider", relay.url, signing_key="other-key-0002"),
                          recorded=created.as_status())
        assert [r.status for r in tenant.requests() if r.path.endswith(created.provider_id)
                ][-2:] == [400, 200]
        # A conflict that outlasts the wait is reported as transient, never as Auth0Conflict.
        sync.settle_timeout = 1.0
        setup.dashboard("PATCH", "/actions/triggers/custom-phone-provider/bindings",
                        json={"bindings": []})
        tenant.fail_next(409, count=50, method="PATCH", path_suffix="/custom-phone-provider/bindings")
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url, signing_key="third-key-0003"),
                              recorded=created.as_status())
    assert caught.value.reason == UNAVAILABLE


@pytest.mark.parametrize("mode", ["send-phone-message", "legacy-hook"])
async def test_manage_routing_on_a_tenant_without_the_legacy_flag_changes_nothing(
        mode, setup, relay):
    """Turning the experience off would succeed and picking phone-message-hook then fail,
    leaving the whole tenant off the Unified Phone Experience: refused before any write."""
    before = setup.tenant.state()
    async with setup.sync() as sync:
        with pytest.raises(RoutingRefused) as caught:
            await sync.ensure(desired_for(mode, relay.url, manage_routing=True))
    assert caught.value.verdict.reason == "LegacyPhoneProviderNotAllowed"
    assert "Auth0 Support" in caught.value.message and "phone-provider" in caught.value.message
    assert setup.tenant.writes() == []
    assert setup.tenant.state() == before


@pytest.mark.parametrize(("legacy_flag", "mode", "reason"), [
    # Legacy endpoint 200: the legacy path is live, the custom phone provider never runs.
    (True, "phone-provider", "WrongPhoneExperience"),
    (True, "send-phone-message", "Routed"),
    # Legacy endpoint 403: the tenant is on the Unified Phone Experience.
    (False, "phone-provider", "Routed"),
    (False, "send-phone-message", "LegacyPhoneProviderNotAllowed"),
])
async def test_an_absent_experience_setting_is_found_out_from_the_legacy_endpoint(
        legacy_flag, mode, reason, setup, relay, sms_emulator):
    setup.tenant.set_phone(phone_consolidated_experience=None, sms_factor=True,
                           message_types=["sms"], selected_provider="phone-message-hook",
                           legacy_mfa_phone_provider=True)  # the Dashboard, before the flag goes
    setup.tenant.set_phone(legacy_mfa_phone_provider=legacy_flag)
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for(mode, relay.url))
    assert result.routing is not None and result.routing.reason == reason, result.routing
    if reason == "WrongPhoneExperience":
        assert "leave phone_consolidated_experience out" in result.routing.message
        assert "answered 200" in result.routing.message
    outcome, _, sent = fire(setup, sms_emulator)
    assert (outcome == "success", sent) == ((True, 1) if reason == "Routed" else (False, 0))


async def test_each_routing_change_is_recorded_before_the_next_write(setup, relay):
    """A failure half-way through manageRouting leaves the first change restorable."""
    before = setup.tenant.state()["phone"]
    setup.tenant.fail_next(400, count=1, method="PUT", path_suffix="/phone/message-types")
    recorded: list[tuple[dict, int]] = []

    async def record(changed):
        recorded.append((dict(changed), len(setup.tenant.writes())))

    async with setup.sync() as sync:
        with pytest.raises(Auth0Error):
            await sync.ensure(desired_for("phone-provider", relay.url, manage_routing=True),
                              record_routing=record)
        assert setup.tenant.state()["phone"]["sms_factor"] is True  # the first change landed
        # Each map was stored before the write it announces (no write in between).
        writes = [(w.method, w.path) for w in setup.tenant.writes()]
        sms_write = writes.index(("PUT", "/api/v2/guardian/factors/sms"))
        assert [(c, n) for c, n in recorded][0] == ({"smsFactor": False}, sms_write)
        last = recorded[-1][0]
        removed = await sync.remove("shop/prod", "phone-provider", NAME,
                                    recorded={"routingChanges": last})
    assert any("smsFactor" in note for note in removed)
    assert setup.tenant.state()["phone"] == before


async def test_legacy_hook_without_delete_hooks_is_refused_before_any_request(auth0_tenant, relay):
    """An ensure may delete stale hook secrets after earlier writes: delete:hooks is checked
    up front, so it never fails half-way with a 403."""
    from otp_operator.auth0 import FORBIDDEN, Auth0Credentials
    from otp_sandbox.auth0_emulator import ALL_SCOPES
    from tests.fixtures.auth0 import make_client

    client = make_client(scopes=tuple(s for s in ALL_SCOPES if s != "delete:hooks"))
    tenant = auth0_tenant(clients=[client])
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("legacy-hook", relay.url))
    assert caught.value.reason == FORBIDDEN and "delete:hooks" in caught.value.message
    assert [r.path for r in tenant.requests()] == ["/oauth/token"]
