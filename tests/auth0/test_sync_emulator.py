"""Auth0Sync against the Auth0 emulator, with the registered code run in Node.js against a real
otp-relay and the 8x8 emulator. Drift is made through the Management API, as a person would."""

from __future__ import annotations

import time

import pytest

from otp_operator.auth0 import (CONFLICT, FORBIDDEN, RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE,
                                Auth0Credentials, Auth0Error, Auth0Sync, RetryPolicy)
from otp_sandbox.auth0_emulator import RateLimit
from tests.support.auth0 import SIGNING_KEY, Setup, desired_for
from tests.fixtures.auth0 import make_client, route_phone_messages

MODES = ["phone-provider", "send-phone-message", "legacy-hook"]
FIRE_TRIGGER = {"phone-provider": "custom-phone-provider",
                "send-phone-message": "send-phone-message", "legacy-hook": "hook"}
NAME = "otp-relay-shop-prod"
FOREIGN_CODE = "exports.onExecuteSendPhoneMessage = async (event, api) => {};\n"


def deliver(setup: Setup, sms_emulator, mode: str, recipient: str = "+6591234567") -> None:
    """Auth0 sends one OTP; the 8x8 emulator must get exactly that text for that number."""
    route_phone_messages(setup.tenant, mode)
    sms_emulator.clear()
    text = f"Your verification code is {int(time.time() * 1000) % 1_000_000:06d}"
    result = setup.tenant.fire_phone_message(recipient=recipient, text=text, code=text[-6:],
                                             trigger=FIRE_TRIGGER[mode])
    assert result.outcome == "success", result
    assert [(m.destination, m.text) for m in sms_emulator.messages()] == [(recipient[1:], text)]


def add_foreign_bound_action(setup: Setup) -> str:
    """Someone else's action, deployed and bound on send-phone-message."""
    d = setup.dashboard
    action = d("POST", "/actions/actions", json={
        "name": "Audit SMS", "code": FOREIGN_CODE, "runtime": "node22",
        "supported_triggers": [{"id": "send-phone-message", "version": "v2"}]})
    d.wait_built_and_deploy(action["id"])
    d("PATCH", "/actions/triggers/send-phone-message/bindings", json={
        "bindings": [{"ref": {"type": "action_id", "value": action["id"]}, "display_name": "Audit SMS"}]})
    return action["id"]


def bound_ids(setup: Setup) -> list[str]:
    data = setup.dashboard("GET", "/actions/triggers/send-phone-message/bindings")
    return [b["action"]["id"] for b in data["bindings"]]


def own_action(setup: Setup, trigger: str) -> dict:
    actions = setup.dashboard("GET", "/actions/actions", params={"triggerId": trigger})["actions"]
    return next(a for a in actions if a["name"] == NAME)


def own_hook(setup: Setup) -> dict:
    return next(h for h in setup.dashboard("GET", "/hooks") if h["name"] == NAME)


async def ensure_repairs(sync: Auth0Sync, setup: Setup, mode: str, relay_url: str, recorded: dict,
                         expected: str) -> dict:
    result = await sync.ensure(desired_for(mode, relay_url), recorded=recorded)
    assert any(expected in note for note in result.repaired), result.repaired
    assert result.writes > 0
    setup.tenant.clear_requests()
    again = await sync.ensure(desired_for(mode, relay_url), recorded=result.as_status())
    assert again.writes == 0 and setup.tenant.writes() == [], "repair did not converge"
    return again.as_status()


async def make_drift_and_repair(sync, setup, sms_emulator, mode, relay_url, recorded) -> dict:
    d = setup.dashboard
    if mode in ("phone-provider", "send-phone-message"):
        trigger = FIRE_TRIGGER[mode]
        action = own_action(setup, trigger)
        d("PATCH", f"/actions/actions/{action['id']}", json={"code": "exports.x = 1; // edited"})
        d.wait_built_and_deploy(action["id"])
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "action code was edited outside the operator")
        deliver(setup, sms_emulator, mode)

        d("PATCH", f"/actions/actions/{action['id']}", json={"secrets": [{"name": "RELAY_URL"}]})
        d.wait_built_and_deploy(action["id"])
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "action secret RELAY_SIGNING_KEY was deleted")
        deliver(setup, sms_emulator, mode)

    if mode == "send-phone-message":
        foreign = [i for i in bound_ids(setup) if i != action["id"]]
        d("PATCH", "/actions/triggers/send-phone-message/bindings", json={"bindings": [
            {"ref": {"type": "action_id", "value": i}, "display_name": "Audit SMS"} for i in foreign]})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "action was unbound from send-phone-message")
        assert bound_ids(setup) == [*foreign, action["id"]]
        deliver(setup, sms_emulator, mode)

    if mode == "phone-provider":
        provider = d("GET", "/branding/phone/providers")["providers"][0]
        d("PATCH", f"/branding/phone/providers/{provider['id']}", json={"disabled": True})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "phone provider was disabled")
        deliver(setup, sms_emulator, mode)
        d("PATCH", f"/branding/phone/providers/{provider['id']}", json={
            "name": "twilio", "configuration": {"delivery_methods": ["text"], "sid": "ACdeadbeef"},
            "credentials": {"auth_token": "twilio-token"}})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "phone provider was switched to 'twilio'")
        deliver(setup, sms_emulator, mode)

    if mode == "legacy-hook":
        hook = own_hook(setup)
        d("PATCH", f"/hooks/{hook['id']}", json={"enabled": False})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded, "hook was disabled")
        deliver(setup, sms_emulator, mode)
        d("PATCH", f"/hooks/{hook['id']}", json={"script": "module.exports = (r, t, c, cb) => cb(null, {});"})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "hook script was edited outside the operator")
        deliver(setup, sms_emulator, mode)
        d("DELETE", f"/hooks/{hook['id']}/secrets", json=["RELAY_SIGNING_KEY"])
        d("POST", f"/hooks/{hook['id']}/secrets", json={"LEFTOVER": "x"})
        recorded = await ensure_repairs(sync, setup, mode, relay_url, recorded,
                                        "hook secret RELAY_SIGNING_KEY was deleted")
        assert set(setup.dashboard("GET", f"/hooks/{hook['id']}/secrets")) == {
            "RELAY_URL", "RELAY_SIGNING_KEY"}
        deliver(setup, sms_emulator, mode)
    return recorded


@pytest.mark.parametrize("mode", MODES)
async def test_lifecycle_create_noop_update_drift_remove(mode, setup, relay, relay_factory,
                                                          relay_settings, sms_emulator, tmp_path):
    foreign_id = add_foreign_bound_action(setup)
    async with setup.sync() as sync:
        created = await sync.ensure(desired_for(mode, relay.url))
        assert created.created and created.writes > 0 and created.repaired == []
        assert created.fingerprint.startswith("sha256:") and SIGNING_KEY not in str(created.as_status())
        deliver(setup, sms_emulator, mode)
        assert foreign_id in bound_ids(setup)

        setup.tenant.clear_requests()
        noop = await sync.ensure(desired_for(mode, relay.url), recorded=created.as_status())
        assert noop.writes == 0 and setup.tenant.writes() == []
        assert (noop.fingerprint, noop.repaired, noop.updated, noop.created) == (
            created.fingerprint, [], [], False)

        # The relay moves: a second relay process at a new URL, the old one is stopped.
        moved = relay_factory(relay_settings, workdir=tmp_path / "relay2")
        relay.stop()
        updated = await sync.ensure(desired_for(mode, moved.url), recorded=noop.as_status())
        assert updated.updated and updated.repaired == [] and updated.writes > 0
        assert updated.fingerprint != created.fingerprint
        deliver(setup, sms_emulator, mode)

        recorded = await make_drift_and_repair(sync, setup, sms_emulator, mode, moved.url,
                                               updated.as_status())
        assert foreign_id in bound_ids(setup)

        removed = await sync.remove("shop/prod", mode, NAME, recorded=recorded)
        assert removed
        state = setup.tenant.state()
        assert [a["name"] for a in state["actions"]] == ["Audit SMS"]
        assert state["hooks"] == [] and state["phone_providers"] == []
        assert bound_ids(setup) == [foreign_id]

        setup.tenant.clear_requests()
        assert await sync.remove("shop/prod", mode, NAME) == []
        assert setup.tenant.writes() == []


@pytest.mark.parametrize("mode", MODES)
async def test_second_channel_on_the_same_integration_point_is_refused_without_writes(mode, setup, relay):
    async with setup.sync() as sync:
        await sync.ensure(desired_for(mode, relay.url))
        setup.tenant.clear_requests()
        rival = desired_for(mode, relay.url, owner="shop/dev", name="otp-relay-shop-dev")
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(rival)
        assert caught.value.reason == CONFLICT
        assert "shop/prod" in caught.value.message
        # Nor may the head start taken while its relay rolls out leave an action behind.
        if mode == "legacy-hook":
            assert await sync.prepare(rival) is None
        else:
            with pytest.raises(Auth0Error) as caught:
                await sync.prepare(rival)
            assert caught.value.reason == CONFLICT
    assert setup.tenant.writes() == []


async def test_foreign_provider_type_is_refused_unless_replacement_is_asked(setup, relay, sms_emulator):
    setup.dashboard("POST", "/branding/phone/providers", json={
        "name": "twilio", "disabled": False,
        "configuration": {"delivery_methods": ["text"], "sid": "ACdeadbeef"},
        "credentials": {"auth_token": "twilio-token"}})
    async with setup.sync() as sync:
        setup.tenant.clear_requests()
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
        assert caught.value.reason == CONFLICT and "twilio" in caught.value.message
        assert setup.tenant.writes() == []
        result = await sync.ensure(desired_for("phone-provider", relay.url, replace_foreign_provider=True))
    assert "phone provider 'twilio' replaced by 'custom'" in result.updated
    deliver(setup, sms_emulator, "phone-provider")


async def test_wrong_client_secret_is_unauthorized_and_never_echoed(setup, relay):
    wrong = "definitely-not-the-secret-1234"
    creds = Auth0Credentials(setup.tenant.domain, setup.operator.client_id, wrong)
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
    assert caught.value.reason == UNAUTHORIZED
    assert wrong not in str(caught.value) and SIGNING_KEY not in str(caught.value)
    assert setup.tenant.writes() == []


async def test_missing_scopes_are_listed_before_any_management_request(auth0_tenant, relay):
    client = make_client(scopes=("read:actions", "read:phone_providers"))
    tenant = auth0_tenant(clients=[client])
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
    assert caught.value.reason == FORBIDDEN
    for scope in ("create:actions", "update:actions", "create:phone_providers"):
        assert scope in caught.value.message
    assert [r.path for r in tenant.requests()] == ["/oauth/token"]


async def test_client_without_management_api_grant_is_forbidden(auth0_tenant, relay):
    client = make_client(granted=False)
    tenant = auth0_tenant(clients=[client])
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("send-phone-message", relay.url))
    assert caught.value.reason == FORBIDDEN and "grant" in caught.value.message


async def test_rate_limit_storm_gives_rate_limited_with_reset_quickly(auth0_tenant, relay):
    client = make_client()
    # Two requests' worth of tokens, refilled one per 20 s: the bucket resets 20-40 s away.
    tenant = auth0_tenant(clients=[client], rate_limit=RateLimit(capacity=2, refill_per_second=0.05))
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    started = time.monotonic()
    async with Auth0Sync(creds) as sync:
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("phone-provider", relay.url))
    elapsed = time.monotonic() - started
    assert caught.value.reason == RATE_LIMITED
    assert caught.value.retry_after is not None and caught.value.retry_after > 5
    assert elapsed < 10, f"ensure hung {elapsed:.1f} s in a 429 storm"
    limited = [r for r in tenant.requests() if r.status == 429]
    # The sync reads the tenant with up to six requests at once: each is tried once, none again.
    assert 1 <= len(limited) <= 6, "no hot loop: a bounded number of attempts"


async def test_a_small_bucket_is_paced_from_its_headers_without_a_429(auth0_tenant, relay):
    client = make_client()
    tenant = auth0_tenant(clients=[client], rate_limit=RateLimit(capacity=3, refill_per_second=5))
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    async with Auth0Sync(creds, policy=RetryPolicy(attempts=6)) as sync:
        result = await sync.ensure(desired_for("send-phone-message", relay.url))
    assert result.created
    assert [r.status for r in tenant.requests() if r.status == 429] == []


async def test_transient_5xx_is_retried_and_a_persistent_one_is_unavailable(setup, relay):
    async with setup.sync() as sync:
        setup.tenant.fail_next(503, count=1)
        assert (await sync.ensure(desired_for("legacy-hook", relay.url))).created
        setup.tenant.fail_next(503, count=20)
        with pytest.raises(Auth0Error) as caught:
            await sync.ensure(desired_for("legacy-hook", relay.url))
    assert caught.value.reason == UNAVAILABLE


async def test_revoked_token_is_refreshed_once(setup, relay):
    async with setup.sync() as sync:
        first = await sync.ensure(desired_for("phone-provider", relay.url))
        setup.tenant.revoke_tokens()
        setup.tenant.clear_requests()
        again = await sync.ensure(desired_for("phone-provider", relay.url), recorded=first.as_status())
    assert again.writes == 0
    log = [(r.path, r.status) for r in setup.tenant.requests()]
    assert log.count(("/oauth/token", 200)) == 1
    # The reads sent at once with the revoked token each get one 401; none is retried twice.
    assert 1 <= [s for _, s in log].count(401) <= 6


@pytest.mark.parametrize("mode", MODES)
async def test_remove_leaves_what_another_channel_owns(mode, setup, relay):
    async with setup.sync() as sync:
        await sync.ensure(desired_for(mode, relay.url))
        before = setup.tenant.state()
        setup.tenant.clear_requests()
        assert await sync.remove("shop/dev", mode, NAME) == []
    assert setup.tenant.writes() == []
    assert setup.tenant.state() == before
