"""The registered code, executed in Node.js by the Auth0 emulator's runner, against a real
otp-relay process and the 8x8 emulator: exact delivery, and failures mapped to retry / drop /
a thrown error with a reason that never carries the code or the number."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from otp_sandbox.auth0_emulator.launcher import ROUTING_FOR_MODE

from tests.support.auth0 import SIGNING_KEY, SMS_API_KEY, SUBACCOUNT, Setup, desired_for
from tests.fixtures.auth0 import route_phone_messages
from tests.fixtures.relay import free_port, relay_env

RECIPIENT = "+6591234567"
CODE = "482913"
TEXT = f"Your verification code is {CODE}"
CALLER_ID = "+6568332048"  # the calls' caller ID, whitelisted on the 8x8 emulator
FIRE_TRIGGER = {"phone-provider": "custom-phone-provider",
                "send-phone-message": "send-phone-message", "legacy-hook": "hook"}


@pytest.fixture
def start_relay(sms_emulator, ssl_cert_file: Path, relay_factory, tmp_path: Path):
    """start_relay(**settings) -> a relay with OTP_RELAY_<KEY>=value overrides."""
    sms_emulator.add_subaccount(SUBACCOUNT, SMS_API_KEY)
    sms_emulator.clear()
    counter = iter(range(100))

    def start(*, api_key: str = SMS_API_KEY, signing_keys=(SIGNING_KEY,), tls=None, **settings: str):
        workdir = tmp_path / f"relay{next(counter)}"
        env = relay_env(workdir, base_url=sms_emulator.base_url, ssl_cert_file=ssl_cert_file,
                        subaccount=SUBACCOUNT, api_key=api_key, signing_keys=signing_keys, **settings)
        return relay_factory(env, workdir=workdir, tls=tls, ca_file=ssl_cert_file if tls else None)

    return start


async def registered(setup: Setup, mode: str, relay_url: str, **desired: Any) -> None:
    async with setup.sync() as sync:
        await sync.ensure(desired_for(mode, relay_url, **desired))


def fire(setup: Setup, mode: str, recipient: str = RECIPIENT, code: str = CODE, **extra):
    route_phone_messages(setup.tenant, mode)
    # Auth0 makes a new code per message; two identical bodies in the same second would carry
    # the same signature, which the relay refuses as a replay.
    return setup.tenant.fire_phone_message(recipient=recipient, text=TEXT.replace(CODE, code),
                                           code=code, trigger=FIRE_TRIGGER[mode], **extra)


def assert_reason_is_clean(reason: str | None, recipient: str = RECIPIENT) -> None:
    assert reason
    assert CODE not in reason and recipient[-8:] not in reason and TEXT not in reason
    assert SIGNING_KEY not in reason


@pytest.mark.parametrize("mode", ["phone-provider", "send-phone-message", "legacy-hook"])
async def test_code_delivers_the_exact_text_to_the_right_number_over_https(mode, setup, start_relay,
                                                                            sandbox_ca, sms_emulator):
    relay = start_relay(tls=sandbox_ca.issue("relay-https"))
    assert relay.url.startswith("https://")
    await registered(setup, mode, relay.url)
    result = fire(setup, mode, recipient="+6587654321")
    assert result.outcome == "success", result
    sent = sms_emulator.messages()
    assert [(m.destination, m.text, m.subaccount) for m in sent] == [("6587654321", TEXT, SUBACCOUNT)]


async def test_relay_rate_limit_asks_auth0_to_retry(setup, start_relay, sms_emulator):
    relay = start_relay(PER_RECIPIENT="1/10m")
    await registered(setup, "phone-provider", relay.url)
    assert fire(setup, "phone-provider").outcome == "success"
    second = fire(setup, "phone-provider", code="771204")
    assert second.outcome == "retry" and "429" in second.reason
    assert_reason_is_clean(second.reason)
    assert "771204" not in second.reason
    assert len(sms_emulator.messages()) == 1


async def test_unreachable_relay_asks_auth0_to_retry(setup):
    await registered(setup, "phone-provider", f"http://127.0.0.1:{free_port()}")
    result = fire(setup, "phone-provider")
    assert result.outcome == "retry" and "unreachable" in result.reason
    assert_reason_is_clean(result.reason)


async def test_relay_unavailable_upstream_asks_auth0_to_retry(setup, start_relay, sms_emulator):
    relay = start_relay()
    await registered(setup, "phone-provider", relay.url)
    sms_emulator.inject("status", status=503, count=None)
    try:
        result = fire(setup, "phone-provider")
    finally:
        sms_emulator.clear_faults()
    assert result.outcome == "retry" and "503" in result.reason
    assert_reason_is_clean(result.reason)


@pytest.mark.parametrize("case,settings,recipient,expected", [
    ("wrong signing key", {"signing_keys": ("another-key-entirely",)}, RECIPIENT, "401"),
    ("country not allowed", {"ALLOWED_COUNTRIES": "SG"}, "+60123456789", "403"),
    ("8x8 rejects the API key", {"api_key": "revoked-or-wrong-key"}, RECIPIENT, "502"),
])
async def test_permanent_failures_drop_the_message(case, settings, recipient, expected, setup,
                                                   start_relay, sms_emulator):
    relay = start_relay(**settings)
    await registered(setup, "phone-provider", relay.url)
    result = fire(setup, "phone-provider", recipient=recipient)
    assert result.outcome == "drop", (case, result)
    assert expected in result.reason
    assert_reason_is_clean(result.reason, recipient)
    assert sms_emulator.messages() == []


@pytest.mark.parametrize("mode", ["send-phone-message", "legacy-hook"])
async def test_a_recipient_in_another_format_is_normalised_to_e164(mode, setup, start_relay,
                                                                   sms_emulator):
    relay = start_relay()
    await registered(setup, mode, relay.url)
    result = fire(setup, mode, recipient="65-9123 4567")
    assert result.outcome == "success", result
    assert [m.destination for m in sms_emulator.messages()] == ["6591234567"]


@pytest.mark.parametrize("mode", ["send-phone-message", "legacy-hook"])
async def test_mfa_code_reports_failure_as_an_error(mode, setup, start_relay, sms_emulator):
    relay = start_relay(signing_keys=("another-key-entirely",))
    await registered(setup, mode, relay.url)
    result = fire(setup, mode)
    assert result.outcome == "error", result
    assert "401" in result.reason
    assert_reason_is_clean(result.reason)


class HoldingProxy:
    """A loopback TCP proxy in front of the relay that holds the relay's answer to the first
    connection for ``hold_seconds`` (a slow or lost response: the relay did its work, the
    caller times out). Later connections pass straight through."""

    def __init__(self, upstream_port: int, hold_seconds: float) -> None:
        self.upstream_port = upstream_port
        self.hold_seconds = hold_seconds
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None
        self.handlers: list[asyncio.Task] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        hold = self.hold_seconds if self.connections == 1 else 0.0
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                        delay = 0.0
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer, 0.0),
                             pipe(upstream_reader, client_writer, hold))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def test_auth0_retries_after_a_relay_timeout_and_exactly_one_sms_reaches_8x8(
        setup, start_relay, sms_emulator):
    """The relay sends the SMS but its answer is late: the Auth0 code times out after 8 s and
    asks Auth0 to retry; Auth0 runs it again with the same notification, the relay recognises
    the idempotency key and answers without sending again."""
    relay = start_relay()
    proxy = HoldingProxy(int(relay.url.rsplit(":", 1)[1].split("/")[0]), hold_seconds=10.0)
    proxy_url = await proxy.start()
    try:
        await registered(setup, "phone-provider", proxy_url)
        route_phone_messages(setup.tenant, "phone-provider")
        result = await setup.tenant.fire_phone_message_async(
            recipient=RECIPIENT, text=TEXT, code=CODE, retries=2)
    finally:
        await proxy.stop()
    assert result.attempts == 2 and result.outcome == "success", result
    assert proxy.connections == 2
    assert [(m.destination, m.text) for m in sms_emulator.messages()] == [(RECIPIENT[1:], TEXT)]


@pytest.mark.parametrize("mode", ["phone-provider", "send-phone-message", "legacy-hook"])
async def test_a_voice_message_reaches_the_relay_and_becomes_one_call(mode, setup, start_relay, sms_emulator):
    """Auth0's voice message (``as_voice`` of a custom-phone-provider notification, the text of a
    ``message_type: voice`` send-phone-message or hook) goes to a relay with voice on, with its
    locale: 8x8 places one call that says the words in the locale's voice; no SMS."""
    sms_emulator.whitelist_caller_id(SUBACCOUNT, CALLER_ID)
    relay = start_relay(VOICE="true", VOICE_BASE_URL=sms_emulator.base_url, VOICE_CALLER_ID=CALLER_ID,
                        VOICE_PROFILES="da=da-DK-Naja")
    setup.tenant.set_phone(**{**ROUTING_FOR_MODE[mode], "message_types": ["sms", "voice"]})
    await registered(setup, mode, relay.url, voice=True)  # the channel's spec.voice
    result = setup.tenant.fire_phone_message(recipient=RECIPIENT, text=TEXT, code=CODE, delivery_method="voice",
                                             locale="da", trigger=FIRE_TRIGGER[mode])
    assert result.outcome == "success", result
    [call] = sms_emulator.calls()
    assert (call.destination, call.source, call.text, call.voice_profile, call.repetition) == (
        RECIPIENT[1:], CALLER_ID[1:], TEXT, "da-DK-Naja", 2)
    assert sms_emulator.messages() == []
