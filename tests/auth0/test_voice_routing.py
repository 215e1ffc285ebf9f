"""MFA by phone call as the tenant routes it: the phone provider offers voice only when the
channel places calls (spec.voice) and the tenant's message types ask for them; a tenant that
offers calls to a channel without voice makes PhoneRouting False for that flow with the fix,
and spec.voice.offer with manageRouting adds voice to the message types (recorded, restored)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from otp_operator.auth0.routing import (FALSE, MESSAGE_TYPES_KEY, MFA_VOICE_FLOW, TRUE, ObservedRouting,
                                        delivery_methods, problems, verdict)
from otp_operator.spec import SpecError, parse_channel
from tests.fixtures.auth0 import route_phone_messages
from tests.support.auth0 import SUBACCOUNT, desired_for

SMS_AND_VOICE = ObservedRouting(upe=True, sms_factor=True, message_types=("sms", "voice"), selected_provider=None)
SMS_ONLY = ObservedRouting(upe=True, sms_factor=True, message_types=("sms",), selected_provider=None)


def flows(result) -> dict[str, tuple[str, str]]:
    return {f.flow: (f.routed, f.setting) for f in result.flows}


@pytest.mark.parametrize(("observed", "voice", "offer", "methods"), [
    (SMS_AND_VOICE, False, False, ("text",)),  # the tenant asks, the channel cannot call
    (SMS_AND_VOICE, True, False, ("text", "voice")),
    (SMS_ONLY, True, False, ("text",)),  # the channel could, the tenant does not ask
    (SMS_ONLY, True, True, ("text", "voice")),  # ... but will once manageRouting adds it
])
def test_the_provider_offers_voice_only_when_both_sides_want_calls(observed, voice, offer, methods):
    assert delivery_methods(observed, voice, offer) == methods


def test_voice_offered_by_the_tenant_without_spec_voice_is_not_routed_and_names_both_fixes():
    result = verdict("phone-provider", "otp", "t.example", problems("phone-provider", SMS_AND_VOICE), {},
                     ("mfa",), SMS_AND_VOICE, voice=False)
    assert (result.ok, result.reason) == (False, "VoiceNotConfigured")
    assert "spec.voice" in result.message and '{"message_types": ["sms"]}' in result.message
    assert flows(result)["mfa"][0] == TRUE and flows(result)[MFA_VOICE_FLOW][0] == FALSE
    routed = verdict("phone-provider", "otp", "t.example", [], {}, ("mfa",), SMS_AND_VOICE, voice=True)
    assert routed.ok and "MFA SMS and calls" in routed.message and flows(routed)[MFA_VOICE_FLOW][0] == TRUE
    # a tenant without calls and a channel without voice: nothing about voice at all
    plain = verdict("phone-provider", "otp", "t.example", [], {}, ("mfa",), SMS_ONLY, voice=False)
    assert plain.ok and MFA_VOICE_FLOW not in flows(plain)


def test_offer_asks_for_voice_in_the_message_types_together_with_sms():
    observed = ObservedRouting(upe=True, sms_factor=True, message_types=(), selected_provider=None)
    found = problems("phone-provider", observed, offer_voice=True)
    assert [(p.reason, p.key, p.wanted) for p in found] == [
        ("SmsMessageTypeMissing", MESSAGE_TYPES_KEY, ["sms"]),
        ("VoiceMessageTypeMissing", MESSAGE_TYPES_KEY, ["sms", "voice"])]
    result = verdict("phone-provider", "otp", "t.example", problems("phone-provider", SMS_ONLY, True), {},
                     ("mfa",), SMS_ONLY, voice=True)
    assert (result.ok, result.reason) == (False, "VoiceMessageTypeMissing")
    assert flows(result)["mfa"][0] == TRUE and flows(result)[MFA_VOICE_FLOW][0] == FALSE


CALLER_ID = "+6562345678"


async def test_on_a_tenant_the_provider_and_phone_routing_follow_spec_voice(
        setup, relay_settings, relay_factory, sms_emulator, tmp_path):
    sms_emulator.whitelist_caller_id(SUBACCOUNT, CALLER_ID)
    relay = relay_factory({**relay_settings, "OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": CALLER_ID,
                           "OTP_RELAY_VOICE_BASE_URL": sms_emulator.base_url}, workdir=tmp_path / "relay")
    route_phone_messages(setup.tenant, "phone-provider")
    setup.tenant.set_phone(message_types=["sms", "voice"])
    async with setup.sync() as sync:
        without = await sync.ensure(desired_for("phone-provider", relay.url))
        assert setup.tenant.state()["phone_providers"][0]["configuration"]["delivery_methods"] == ["text"]
        assert (without.routing.ok, without.routing.reason) == (False, "VoiceNotConfigured")
        assert setup.tenant.state()["phone"]["message_types"] == ["sms", "voice"]  # never taken away
        call = setup.tenant.fire_phone_message(delivery_method="voice")
        assert call.outcome != "success"  # Auth0 has no provider method for it: nothing reaches the relay

        configured = await sync.ensure(desired_for("phone-provider", relay.url, voice=True),
                                       recorded=without.as_status())
    assert setup.tenant.state()["phone_providers"][0]["configuration"]["delivery_methods"] == ["text", "voice"]
    assert configured.routing.ok, configured.routing
    assert flows(configured.routing)[MFA_VOICE_FLOW][0] == TRUE
    assert sms_emulator.calls() == []  # the refused call above never reached 8x8
    call = setup.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 551177", code="551177",
                                           delivery_method="voice")
    assert call.outcome == "success", call.reason
    [placed] = sms_emulator.calls()
    assert (placed.source, placed.destination) == (CALLER_ID[1:], "6591234567")


async def test_offer_with_manage_routing_adds_voice_and_removal_puts_the_types_back(setup, relay):
    route_phone_messages(setup.tenant, "phone-provider")
    before = setup.tenant.state()["phone"]["message_types"]
    assert "voice" not in before
    desired = desired_for("phone-provider", relay.url, voice=True, offer_voice=True)
    async with setup.sync() as sync:
        reported = await sync.ensure(desired_for("phone-provider", relay.url, voice=True, offer_voice=True,
                                                 name="otp-relay-shop-report"))
        assert reported.routing.reason == "VoiceMessageTypeMissing"
        assert setup.tenant.state()["phone"]["message_types"] == before  # reported, not changed
        await sync.remove("shop/prod", "phone-provider", "otp-relay-shop-report", recorded=reported.as_status())

        managed = await sync.ensure(desired_for("phone-provider", relay.url, voice=True, offer_voice=True,
                                                manage_routing=True))
        assert managed.routing.ok, managed.routing
        assert setup.tenant.state()["phone"]["message_types"] == [*before, "voice"]
        assert managed.as_status()["routingChanges"][MESSAGE_TYPES_KEY] == before
        await sync.remove("shop/prod", "phone-provider", desired.name, recorded=managed.as_status())
    assert setup.tenant.state()["phone"]["message_types"] == before


def test_spec_voice_is_parsed_with_its_defaults_and_refused_when_wrong():
    base = {"auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
            "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
            "relay": {"publicUrl": "https://otp.shop.example"}}
    assert parse_channel("shop", "prod", base).voice is None
    assert parse_channel("shop", "prod", {**base, "voice": {"callerId": "+6531234567", "enabled": False}}).voice is None
    voice = parse_channel("shop", "prod", {**base, "voice": {"callerId": "+6531234567",
                                                              "profiles": {"en_GB": "en-GB-Emma"}}}).voice
    assert voice is not None
    assert (voice.profile, voice.profiles, voice.repetition, voice.per_recipient_limit, voice.per_recipient_window,
            voice.offer) == ("en-US-Standard-A", (("en_GB", "en-GB-Emma"),), 2, 3, "1h", False)
    for bad, said in (({"callerId": "6531234567"}, "E.164"), ({"callerId": "+6531234567", "repetition": 9}, "1 to 3"),
                      ({"callerId": "+6531234567", "profiles": {"en_GB": "Emma"}}, "speech profile"),
                      ({"callerId": "+6531234567", "perRecipient": {"window": "1x"}}, "window")):
        with pytest.raises(SpecError, match=said):
            parse_channel("shop", "prod", {**base, "voice": bad})


@pytest.mark.parametrize(("sms_base_url", "voice_base_url"), [
    ("", None),  # the region's own hosts: the relay knows them
    ("https://sms.8x8.uk", "https://voice.8x8.uk"),  # 8x8 serves calls beside each SMS host
    ("https://10.0.0.7:8443", "https://10.0.0.7:8443"),  # an allowed other URL (emulator) serves both
])
def test_the_relay_gets_the_voice_settings(sms_base_url, voice_base_url):
    from otp_operator import render  # noqa: PLC0415

    base = {"auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
            "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}, "baseUrl": sms_base_url},
            "relay": {"publicUrl": "https://otp.shop.example"}}
    assert not {e["name"] for e in render.relay_env(parse_channel("shop", "prod", base))} & {
        "OTP_RELAY_VOICE", "OTP_RELAY_VOICE_CALLER_ID"}
    ch = parse_channel("shop", "prod", {**base, "voice": {
        "callerId": "+6531234567", "profiles": {"en_GB": "en-GB-Emma", "da": "da-DK-Naja"}, "repetition": 3,
        "perRecipient": {"limit": 2, "window": "30m"}}})
    env = {e["name"]: e["value"] for e in render.relay_env(ch)}
    assert {k: v for k, v in env.items() if k.startswith("OTP_RELAY_VOICE")} == {
        "OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": "+6531234567",
        "OTP_RELAY_VOICE_PROFILE": "en-US-Standard-A", "OTP_RELAY_VOICE_PROFILES": "da=da-DK-Naja,en_GB=en-GB-Emma",
        "OTP_RELAY_VOICE_REPETITION": "3", "OTP_RELAY_VOICE_PER_RECIPIENT": "2/30m",
        **({"OTP_RELAY_VOICE_BASE_URL": voice_base_url} if voice_base_url else {})}
    # ... and the relay starts with them as meant (names and formats are the relay's)
    from otp_relay import config as relay_config  # noqa: PLC0415

    settings = relay_config.load([], env)
    assert (settings.voice_enabled, settings.voice_caller_id, settings.voice_repetition) == (True, "+6531234567", 3)
    assert (settings.voice_per_recipient.limit, settings.voice_per_recipient.window) == (2, 1800)
    assert [settings.voice_profile_for(locale) for locale in ("en_GB", "da_DK", "fr_FR")] == [
        "en-GB-Emma", "da-DK-Naja", "en-US-Standard-A"]
    if voice_base_url:
        assert settings.voice_base_url == voice_base_url


async def test_call_outcomes_reach_status_delivery_per_channel(receipt_relay, sms_emulator, monkeypatch):
    """A delivered SMS and an answered call, through a real relay with 8x8's receipts and session
    summary (on the webhook the relay registered itself): the operator's timer writes both into
    status.delivery, per channel, and the webhook's state beside them."""
    from otp_operator import delivery, names  # noqa: PLC0415
    from tests.support.auth0 import SIGNING_KEY  # noqa: PLC0415
    from tests.fixtures.relay import otp_body, voice_body  # noqa: PLC0415

    sms_emulator.whitelist_caller_id(SUBACCOUNT, CALLER_ID)
    relay = receipt_relay(OTP_RELAY_VOICE="true", OTP_RELAY_VOICE_CALLER_ID=CALLER_ID,
                          OTP_RELAY_VOICE_BASE_URL=sms_emulator.base_url)
    # no webhook set by hand: the relay points the subaccount's VSS webhook at itself
    number = "+6591230077"
    sms_emulator.set_outcome(number, "delivered", after_ms=100)
    sms_emulator.set_call_outcome(number, "answered", after_ms=200, duration_s=1)
    for message in (otp_body(number, "120044"), voice_body(number, "120045")):
        answer = relay.post(message, SIGNING_KEY)
        assert answer.status_code == 202, answer.text
    monkeypatch.setattr(delivery, "summary_url", lambda namespace, name: relay.admin_url + names.RELAY_DELIVERY_SUMMARY_PATH)
    spec = {"auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
            "sms": {"subaccountId": SUBACCOUNT, "apiKeySecretRef": {"name": "eightbyeight"}},
            "relay": {"publicUrl": "https://otp.shop.example"}, "voice": {"callerId": CALLER_ID}}
    body: dict = {"metadata": {"namespace": "shop", "name": "prod"}, "spec": spec, "status": {}}
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        patch = SimpleNamespace(status={})
        await delivery.poll_delivery(namespace="shop", name="prod", spec=spec, body=body, patch=patch)
        body["status"].update(patch.status)
        channels = body["status"].get("delivery", {}).get("channels", {})
        if channels.get("voice", {}).get("delivered") and channels.get("text", {}).get("delivered"):
            break
        assert asyncio.get_running_loop().time() < deadline, body["status"]
        await asyncio.sleep(0.3)
    assert {channel: (figures["sent"], figures["delivered"], figures["undelivered"])
            for channel, figures in channels.items()} == {"text": (1, 1, 0), "voice": (1, 1, 0)}
    assert (body["status"]["delivery"]["sent"], body["status"]["delivery"]["delivered"]) == (2, 2)
    assert body["status"]["delivery"]["voiceWebhook"] == "ours"
