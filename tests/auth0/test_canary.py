"""The live canary without Kubernetes: the operator's delivery timer asks the Auth0 emulator's try
endpoint, the action Auth0Sync registered runs in Node.js and calls a real relay started with
the canary number, the 8x8 emulator delivers or refuses (and posts its receipt), the timer reads
the relay's summary into status.canary, and the condition builder makes Delivering of it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from otp_operator import delivery, names, status
from otp_operator.auth0_pool import Auth0Pool
from otp_operator.runtime import Auth0Memory, ChannelMemory
from otp_operator.spec import SpecError, parse_channel
from tests.fixtures.relay import RelayProcess, fresh_number
from tests.support.auth0 import SIGNING_KEY, Setup, desired_for
from tests.fixtures.auth0 import route_phone_messages

def spec_for(number: str, integration: str = "phone-provider", every: str = "30m") -> dict[str, Any]:
    return {"auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"},
                      "integration": integration},
            "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
            "relay": {"publicUrl": "https://otp.shop.example/prod"},
            "canary": {"to": number, "every": every}}


@pytest.fixture
def canary_relay(receipt_relay):
    """``canary_relay(number)``: a relay with that canary number whose sends ask for receipts."""
    return lambda number: receipt_relay(OTP_RELAY_CANARY_NUMBER=number)


class Channel:
    """One channel's status as the timer and the reconcile see it, and their steps."""

    def __init__(self, setup: Setup, relay: RelayProcess, number: str, provider_id: str | None, monkeypatch,
                 integration: str = "phone-provider", signing_key: str = SIGNING_KEY) -> None:
        self.spec, self.number = spec_for(number, integration), number
        self.body: dict[str, Any] = {
            "metadata": {"namespace": "shop", "name": "prod"}, "spec": self.spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "auth0": {"providerId": provider_id} if provider_id else {}}}
        memory = ChannelMemory(auth0=Auth0Memory(last_credentials=setup.credentials))
        signing_secret = {"data": {names.SIGNING_KEY_SECRET_KEY: base64.b64encode(f"{signing_key}\n".encode()).decode()}}

        async def read(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            assert (kind, name) == ("Secret", names.signing_key_secret_name("prod"))
            return signing_secret

        self.runtime = SimpleNamespace(auth0=Auth0Pool(4), memory=lambda namespace, name: memory, read=read)
        monkeypatch.setattr(delivery, "summary_url", lambda namespace, name: relay.admin_url + names.RELAY_DELIVERY_SUMMARY_PATH)
        monkeypatch.setattr(delivery, "relay_messages_url", lambda ch: relay.url.rstrip("/") + names.RELAY_PUBLIC_PATH)

    async def tick(self) -> dict[str, Any]:
        patch = SimpleNamespace(status={})
        await delivery.poll_delivery(namespace="shop", name="prod", spec=self.spec, body=self.body, patch=patch,
                                     memo=SimpleNamespace(runtime=self.runtime))
        self.body["status"].update(patch.status)
        return patch.status

    def verdict(self) -> status.Verdict:
        ch = parse_channel("shop", "prod", self.spec)
        found = status.delivering_verdict(self.body["status"].get("canary"), ch.auth0.integration,
                                          ch.canary.masked, True)
        assert found is not None
        return found

    async def until(self, wanted: str, limit: float = 20) -> status.Verdict:
        deadline = time.monotonic() + limit
        while True:
            await self.tick()
            verdict = self.verdict()
            if verdict.status == wanted or time.monotonic() > deadline:
                return verdict
            await asyncio.sleep(0.3)

    async def close(self) -> None:
        await self.runtime.auth0.close()


async def registered(setup: Setup, relay: RelayProcess) -> str:
    async with setup.sync() as sync:
        result = await sync.ensure(desired_for("phone-provider", relay.url))
    assert result.provider_id
    route_phone_messages(setup.tenant, "phone-provider")  # the tenant set up the documented way
    return result.provider_id


async def test_a_delivered_canary_makes_delivering_true(setup, canary_relay, sms_emulator, monkeypatch, caplog):
    number = fresh_number()
    relay = canary_relay(number)
    channel = Channel(setup, relay, number, await registered(setup, relay), monkeypatch)
    sms_emulator.set_outcome(number, "delivered", after_ms=500)
    caplog.set_level(logging.INFO, logger="otp_operator.delivery")
    try:
        first = await channel.tick()  # due at once: Auth0 is asked, the relay already sent it
        assert set(first["canary"]) == {"lastTryTime", "result"} and first["canary"]["result"]["state"] == "sent"
        assert channel.verdict().reason == "CanaryAwaitingReceipt"
        verdict = await channel.until("True")
        assert verdict.reason == "CanaryDelivered", verdict
        assert "delivered in" in verdict.message and f"***{number[-4:]}" in verdict.message
        assert 0.4 <= channel.body["status"]["canary"]["result"]["deliverySeconds"] < 10
        assert await channel.tick() == {}  # nothing new: no write, and not due again before 30m
    finally:
        await channel.close()
    [sent] = [m for m in sms_emulator.messages() if m.destination == number[1:]]
    assert "code" not in sent.text.lower()  # Auth0's test message, not an OTP
    shown = json.dumps(channel.body["status"]) + verdict.message + caplog.text
    assert number not in shown and number[1:] not in shown
    assert f"***{number[-4:]}" in caplog.text


@pytest.mark.parametrize(("steer", "reason", "named"), [
    ("reject", "Canary8x8Rejected", "code REJECTED"),
    ("undelivered", "CanaryUndelivered", "code 1 (Absent subscriber)"),
])
async def test_8x8_refusing_the_canary_makes_delivering_false_naming_its_code(
        setup, canary_relay, sms_emulator, monkeypatch, steer, reason, named):
    number = fresh_number()
    relay = canary_relay(number)
    channel = Channel(setup, relay, number, await registered(setup, relay), monkeypatch)
    if steer == "reject":
        sms_emulator.reject_destination(number)
    else:
        sms_emulator.set_outcome(number, "undelivered", error_code=1)
    try:
        verdict = await channel.until("False")
    finally:
        await channel.close()
    assert (verdict.status, verdict.reason) == ("False", reason), verdict
    assert named in verdict.message
    # Ready keeps its meaning: the canary is reported beside it
    ok = status.true("Available", "relay up")
    conditions = status.conditions([], 1, ok, status.true("Synced", "synced"), "2026-12-07T12:00:00Z",
                                   delivering=verdict)
    assert [(c["type"], c["status"]) for c in conditions] == [
        ("Ready", "True"), ("RelayAvailable", "True"), ("Auth0Synced", "True"), ("Delivering", "False")]


async def test_a_broken_auth0_provider_makes_delivering_false_naming_auth0(
        setup, canary_relay, sms_emulator, monkeypatch):
    number = fresh_number()
    relay = canary_relay(number)
    provider_id = await registered(setup, relay)
    setup.dashboard("PATCH", f"/branding/phone/providers/{provider_id}", json={"disabled": True})
    channel = Channel(setup, relay, number, provider_id, monkeypatch)
    try:
        await channel.tick()
        verdict = channel.verdict()
    finally:
        await channel.close()
    assert (verdict.status, verdict.reason) == ("False", "CanaryAuth0Refused"), verdict
    assert "Auth0 refused" in verdict.message and "400 phone_provider_test_failed" in verdict.message
    assert channel.body["status"]["canary"]["tryError"] == "400 phone_provider_test_failed"
    assert sms_emulator.messages() == []
    assert relay.metric("otp_relay_canary_sends_total", outcome="accepted") == 0.0


# --- decisions (pure) ---------------------------------------------------------------------------
def test_a_relay_never_called_is_false_after_the_bound_and_unknown_before() -> None:
    tried = delivery.canary_tried(1_000_000.0, None)
    assert delivery.canary_observed(tried, None, 1_000_000.0 + 60) is None  # still within the bound
    assert status.delivering_verdict(tried, "phone-provider", "***4567", True).reason == "CanaryPending"
    late = delivery.canary_observed(tried, None, 1_000_000.0 + status.CANARY_RELAY_BOUND + 1)
    verdict = status.delivering_verdict(late, "phone-provider", "***4567", True)
    assert (verdict.status, verdict.reason) == ("False", "CanaryRelayNotCalled")
    # the previous canary's record (before this try) is not this one's
    old = {"sentAt": "1970-01-12T13:00:00Z", "state": "delivered"}
    assert delivery.canary_observed(tried, old, 1_000_000.0 + 60) is None


@pytest.mark.parametrize(("integration", "signing_key", "wanted"), [
    ("send-phone-message", SIGNING_KEY, ("True", "CanaryDelivered")),
    ("legacy-hook", "not-the-relays-key", ("False", "CanaryRelayRefused")),
])
async def test_in_the_legacy_modes_the_operator_sends_the_canary_to_the_relay_itself(
        setup, canary_relay, sms_emulator, monkeypatch, integration, signing_key, wanted):
    number = fresh_number()
    relay = canary_relay(number)
    channel = Channel(setup, relay, number, None, monkeypatch, integration=integration, signing_key=signing_key)
    sms_emulator.set_outcome(number, "delivered", after_ms=200)
    try:
        verdict = await channel.until(wanted[0])
    finally:
        await channel.close()
    assert (verdict.status, verdict.reason) == wanted, verdict
    assert f"Auth0 has no test endpoint for {integration}" in verdict.message
    sent = [m for m in sms_emulator.messages() if m.destination == number[1:]]
    if wanted[0] == "True":
        [message] = sent
        assert message.text.startswith("otp-relay canary ")
        assert relay.metric("otp_relay_canary_sends_total", outcome="accepted") == 1.0
    else:
        assert sent == [] and "HTTP 401" in verdict.message
    assert not [r for r in setup.tenant.requests() if "/try" in r.path]  # Auth0 was not asked


def test_no_canary_no_condition() -> None:
    assert status.delivering_verdict(None, "phone-provider", "", False) is None
    for mode in ("phone-provider", "send-phone-message", "legacy-hook"):
        verdict = status.delivering_verdict(None, mode, "***4567", True)
        assert (verdict.status, verdict.reason) == ("Unknown", "CanaryPending")


@pytest.mark.parametrize(("canary", "problem"), [
    ({"every": "6h"}, "spec.canary.to is required"),
    ({"to": "+65 9123 4567"}, "E.164"),
    ({"to": "+6591234567", "every": "5m"}, "at least 30m"),
])
def test_a_bad_canary_spec_is_refused_without_echoing_the_number(canary, problem) -> None:
    with pytest.raises(SpecError) as caught:
        parse_channel("shop", "prod", {**spec_for("+6591234567"), "canary": canary})
    assert problem in str(caught.value) and "9123" not in str(caught.value)


def test_the_relay_gets_the_canary_number_and_the_default_period() -> None:
    from otp_operator import render  # noqa: PLC0415

    ch = parse_channel("shop", "prod", {**spec_for("+6591234567"), "canary": {"to": "+6591234567"}})
    assert (ch.canary.every, ch.canary.every_seconds, ch.canary.masked) == ("6h", 6 * 3600, "***4567")
    env = {e["name"]: e["value"] for e in render.relay_env(ch)}
    assert env["OTP_RELAY_CANARY_NUMBER"] == "+6591234567"
    assert "OTP_RELAY_CANARY_NUMBER" not in {e["name"] for e in render.relay_env(
        parse_channel("shop", "prod", {k: v for k, v in spec_for("+6591234567").items() if k != "canary"}))}


def test_the_canary_needs_no_scope_beyond_the_phone_provider_modes() -> None:
    from otp_operator.auth0.model import CANARY_SCOPES, scopes_for  # noqa: PLC0415

    assert CANARY_SCOPES <= scopes_for("phone-provider")


async def test_what_the_timer_records_wakes_the_reconcile_that_writes_delivering() -> None:
    """The timer writes status.canary only; the channel's watch event must wake the reconcile
    (which turns it into Delivering), once per change and not for unrelated status writes."""
    from otp_operator import handlers  # noqa: PLC0415
    from otp_operator.runtime import Wakeups  # noqa: PLC0415

    memory = ChannelMemory()
    runtime = SimpleNamespace(wakeups=Wakeups(), memory=lambda namespace, name: memory, guards={})
    woken = runtime.wakeups.register("shop", "prod")
    body: dict[str, Any] = {"metadata": {"namespace": "shop", "name": "prod", "generation": 1}, "status": {}}

    async def event() -> bool:
        woken.clear()
        await handlers.channel_changed(type="MODIFIED", body=body, memo=SimpleNamespace(runtime=runtime))
        return woken.is_set()

    assert await event()  # first sight
    body["status"]["delivery"] = {"sent": 3}
    assert not await event()  # the delivery summary is not the reconcile's business
    body["status"]["canary"] = delivery.canary_tried(1_000_000.0, None)
    assert await event()
    assert not await event()
    body["status"]["canary"] = {**body["status"]["canary"], "result": {"sentAt": "1970-01-12T13:46:50Z",
                                                                      "state": "sent"}}
    assert await event()
    body["status"]["canary"]["result"] = {**body["status"]["canary"]["result"], "state": "delivered"}
    assert await event()
