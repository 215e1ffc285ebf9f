"""Conversion tracking (issue 26): the Auth0 log stream sink, matching an event to the SMS the
relay sent, 8x8's feedback, the conversion rule's listener calls and its block. The relay's
application runs in this process (aiohttp's test server) on the session's 8x8 emulator; the
shared variant on the real redis-server."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from otp_sandbox.auth0_emulator.logstreams import body_for

from otp_relay import config, conversion, outcomes
from otp_relay.app import Relay
from tests.fixtures.redis import RedisServer
from tests.fixtures.relay import otp_body, relay_env, signed_headers

from .conftest import API_KEY, NO_POLICY_WINDOWS, SIGNING_KEYS, SUBACCOUNT, fresh_number

KEY = SIGNING_KEYS[1]
LOG_TOKENS = ("logs-old-7Hc2Qm9xWz4R", "logs-new-Kp3Vb8Ns1Ty6")
USER = "auth0|64f1c2a9e7b3d5f0a1b2c3d4"
_ids = itertools.count(1)


def log_id() -> str:
    return f"90020261207{next(_ids):045d}"


def mfa_used(number: str, user_id: str = USER, kind: str = "gd_auth_succeed") -> dict[str, Any]:
    """An MFA event as Auth0 logs it (the fields the emulator's logevents write)."""
    return {"log_id": log_id(), "type": kind, "date": "2026-12-07T23:00:00.000Z", "user_id": user_id,
            "user_name": number, "details": {"authenticator": {"id": "sms|dev_1", "type": "sms",
                                                                "phone_number": number}}}


def passwordless(number: str, kind: str = "s") -> dict[str, Any]:
    return {"log_id": log_id(), "type": kind, "user_name": number, "user_id": "sms|5f0a1b2c3d4e",
            "strategy": "sms", "details": {"transaction_id": "t1"}}


class FakeListener:
    """Records every call; ``gate`` is what ``check`` answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate: outcomes.Gate = outcomes.Allowed()

    async def check(self, recipient: str, country: str, now: float) -> outcomes.Gate:
        self.calls.append(("check", (recipient, country)))
        return self.gate

    async def sent(self, sent: outcomes.Sent) -> None:
        self.calls.append(("sent", sent))

    async def converted(self, message_id: str, now: float) -> None:
        self.calls.append(("converted", message_id))

    async def lift(self, key: str, now: float) -> bool:
        self.calls.append(("lift", key))
        return key == "+6591"

    async def summary(self, now: float) -> dict[str, Any]:
        return {"mode": "fake", "prefixes": [], "blocks": []}


class Harness:
    def __init__(self, relay: Relay, public: TestClient, admin: TestClient) -> None:
        self.relay, self.public, self.admin = relay, public, admin
        self.codes = itertools.count(200_000)

    async def send(self, number: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(otp_body(number, code=str(next(self.codes)), **fields)).encode()
        answer = await self.public.post("/v1/messages", data=raw, headers=signed_headers(KEY, raw))
        return answer.status, {**dict(answer.headers), "body": await answer.json(content_type=None)}

    async def logs(self, events: list[dict[str, Any]], token: str | None = LOG_TOKENS[1],
                   fmt: str = "JSONARRAY") -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        raw = body_for(fmt, events) if events else b"[]"
        answer = await self.public.post(conversion.SINK_PATH, data=raw, headers=headers)
        return answer.status, await answer.json(content_type=None) if answer.status == 200 else None

    def metric(self, name: str, **labels: str) -> float:
        return self.relay.metrics.registry.get_sample_value(name, labels) or 0.0

    async def summary(self) -> dict[str, Any]:
        return (await (await self.admin.get("/v1/delivery-summary")).json())["conversion"]


@pytest.fixture
def no_sleep() -> list[float]:
    return []


@pytest.fixture
def relay_harness(emulator, ssl_cert_file: Path, tmp_path: Path, monkeypatch, no_sleep):
    counter = itertools.count()

    @asynccontextmanager
    async def start(listener: Any = None, **settings: str) -> AsyncIterator[Harness]:
        workdir = tmp_path / f"relay{next(counter)}"
        workdir.mkdir()
        tokens = workdir / "log-tokens"
        tokens.write_text("".join(f"{t}\n" for t in LOG_TOKENS))
        settings = {"CONVERSION": "true", "LOG_TOKEN_FILE": str(tokens), "PER_RECIPIENT": "100000/s",
                    "GLOBAL_LIMIT": "100000/s", "MAX_IDEMPOTENCY_KEYS": "1000000000",
                    **NO_POLICY_WINDOWS, **settings}
        settings = {k: v for k, v in settings.items() if v}
        env = relay_env(workdir, base_url=emulator.base_url, ssl_cert_file=ssl_cert_file,
                        subaccount=SUBACCOUNT, api_key=API_KEY, signing_keys=SIGNING_KEYS, **settings)
        monkeypatch.setenv("SSL_CERT_FILE", str(ssl_cert_file))
        relay = Relay(config.load([], env))
        if listener is not None:
            relay.conversion.listener = listener

        async def pause(seconds: float) -> None:
            no_sleep.append(seconds)

        relay.conversion.poster.sleep = pause  # type: ignore[union-attr]
        public, admin = TestClient(TestServer(relay.make_app())), TestClient(TestServer(relay.make_admin_app()))
        async with public, admin:
            yield Harness(relay, public, admin)

    return start


def sent_umids(emulator) -> list[str]:
    return [m.umid for m in emulator.messages()]


async def test_a_used_code_is_reported_success_once_and_told_to_the_listener(relay_harness, emulator) -> None:
    listener = FakeListener()
    number = fresh_number()
    async with relay_harness(listener) as h:
        status, answer = await h.send(number, subject=conversion.subject_for(KEY, USER))
        assert status == 202
        umid = answer["body"]["id"]
        [message] = emulator.messages()
        assert message.track == "Outcome" and message.tracked
        event = mfa_used(number)
        assert await h.logs([event]) == (200, {"results": {"matched": 1}})
        assert await h.logs([event]) == (200, {"results": {"replayed": 1}})  # the same batch again
        again = mfa_used(number)  # a second "used" event: nothing left unresolved
        assert await h.logs([again]) == (200, {"results": {"unknown": 1}})
        await h.relay.conversion.idle()
        await h.relay.conversion.scan()  # reported once: the failure scan finds nothing
        await h.relay.conversion.idle()
        summary = await h.summary()
    [feedback] = emulator.feedback()
    assert (feedback.umid, feedback.outcome) == (umid, "success")
    assert [name for name, _ in listener.calls] == ["check", "sent", "converted"]
    assert listener.calls[1][1] == outcomes.Sent(umid, number, "SG", listener.calls[1][1].at)
    assert listener.calls[2][1] == umid
    assert h.metric("otp_relay_conversion_outcomes_total", country="SG", outcome="success") == 1
    assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="posted") == 1
    assert h.metric("otp_relay_log_events_total", result="replayed") == 1
    assert h.metric("otp_relay_log_events_total", result="unknown") == 1
    assert {k: summary[k] for k in ("enabled", "sent", "success", "failure", "pending", "rate")} == {
        "enabled": True, "sent": 1, "success": 1, "failure": 0, "pending": 0, "rate": 1.0}
    assert summary["countries"] == {"SG": {"sent": 1, "success": 1, "failure": 0, "rate": 1.0}}
    assert summary["feedback"] == {"posted": 1, "failed": 0, "pending": 0}
    assert summary["log_stream"]["events"] == 2 and summary["log_stream"]["last_event"].endswith("Z")
    assert summary["log_stream"]["tokens"] == [conversion.token_id(t) for t in LOG_TOKENS]
    assert summary["rule"] == {"mode": "fake", "prefixes": [], "blocks": []}


async def test_one_user_sent_codes_to_two_numbers_the_event_s_number_names_the_message(
        relay_harness, emulator) -> None:
    """A subject names the user, a number the message: the code used is the one sent to the
    number the event carries, even when a later code went to the same user's other number."""
    used, other = fresh_number(), fresh_number()
    subject = conversion.subject_for(KEY, USER)
    async with relay_harness() as h:
        assert (await h.send(used, subject=subject))[0] == 202
        assert (await h.send(other, subject=subject))[0] == 202
        assert await h.logs([mfa_used(used)]) == (200, {"results": {"matched": 1}})
        await h.relay.conversion.idle()
    [feedback] = emulator.feedback()
    assert (feedback.destination, feedback.outcome) == (used[1:], "success")


async def test_matching_by_number_in_every_stream_format(relay_harness, emulator) -> None:
    """Without a subject the number's digest matches (MFA: the authenticator's phone number,
    passwordless: the E.164 user name); JSONLINES and JSONOBJECT are read like JSONARRAY;
    events that are not "code used" are ignored, broken items counted and skipped."""
    first, second, third = fresh_number(), fresh_number(), fresh_number()
    async with relay_harness() as h:
        for number in (first, second, third):
            assert (await h.send(number))[0] == 202
        assert await h.logs([mfa_used(first, user_id="auth0|other")], fmt="JSONLINES") == (
            200, {"results": {"matched": 1}})
        assert await h.logs([passwordless(second)], fmt="JSONOBJECT") == (200, {"results": {"matched": 1}})
        raw = b'{"log_id": "1", "data": "s"}\nnot json\n' + json.dumps(
            {"log_id": log_id(), "data": passwordless(third, "f")}).encode()
        answer = await h.public.post(conversion.SINK_PATH, data=raw,
                                     headers={"Authorization": f"Bearer {LOG_TOKENS[0]}"})
        assert (answer.status, await answer.json()) == (200, {"results": {"malformed": 2, "ignored": 1}})
        await h.relay.conversion.idle()
    assert sorted(f.destination for f in emulator.feedback()) == sorted(n[1:] for n in (first, second))


async def test_a_forged_token_is_refused_and_counted_and_changes_nothing(relay_harness, emulator) -> None:
    number = fresh_number()
    async with relay_harness() as h:
        assert (await h.send(number))[0] == 202
        for token in (None, "logs-wrong-token", LOG_TOKENS[1] + "x"):
            assert (await h.logs([mfa_used(number)], token=token))[0] == 401
        answer = await h.public.post(conversion.SINK_PATH, data=b"[]",
                                     headers={"Authorization": f"Basic {LOG_TOKENS[1]}"})
        assert answer.status == 401
        await h.relay.conversion.idle()
        assert h.metric("otp_relay_log_events_total", result="unauthorized") == 4
        assert h.metric("otp_relay_log_events_total", result="matched") == 0
        assert (await h.summary())["log_stream"]["events"] == 0
    assert emulator.feedback() == []


async def test_a_new_log_token_is_taken_without_a_restart(relay_harness, emulator) -> None:
    async with relay_harness() as h:
        tokens = h.relay.settings.log_token_file
        assert tokens is not None
        assert (await h.logs([], token="logs-rotated-Zx81"))[0] == 401
        tokens.write_text("logs-rotated-Zx81\n")
        await h.relay.refresh()
        assert (await h.logs([], token="logs-rotated-Zx81"))[0] == 200
        assert (await h.logs([], token=LOG_TOKENS[1]))[0] == 401
        assert (await h.summary())["log_stream"]["tokens"] == [conversion.token_id("logs-rotated-Zx81")]


async def test_events_for_unknown_messages_change_nothing(relay_harness, emulator) -> None:
    async with relay_harness() as h:
        assert (await h.send(fresh_number()))[0] == 202
        assert await h.logs([mfa_used(fresh_number(), user_id="auth0|nobody")]) == (200, {"results": {"unknown": 1}})
        await h.relay.conversion.idle()
    assert emulator.feedback() == []


async def test_an_unused_code_is_reported_failure_at_its_age(relay_harness, emulator) -> None:
    async with relay_harness() as h:
        status, answer = await h.send(fresh_number())
        assert status == 202
        tracker = h.relay.conversion
        await tracker.scan()  # younger than --conversion-failure-after (10m)
        await tracker.idle()
        assert emulator.feedback() == []
        tracker.failure_after = 0.0  # the test's shortened age: every earlier send is due
        await tracker.scan()
        await tracker.scan()
        await tracker.idle()
        assert h.metric("otp_relay_conversion_outcomes_total", country="SG", outcome="failure") == 1
        assert (await h.summary())["failure"] == 1
    assert [(f.umid, f.outcome) for f in emulator.feedback()] == [(answer["body"]["id"], "failure")]


async def test_feedback_retries_on_8x8_5xx_are_bounded(relay_harness, emulator, no_sleep) -> None:
    number, other = fresh_number(), fresh_number()
    async with relay_harness() as h:
        assert (await h.send(number))[0] == 202
        assert (await h.send(other))[0] == 202
        emulator.inject("status", status=500, count=2, api="sms")
        assert (await h.logs([mfa_used(number)]))[0] == 200
        await h.relay.conversion.idle()
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="retried") == 2
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="posted") == 1
        emulator.inject("status", status=503, count=None, api="sms")
        assert (await h.logs([mfa_used(other)]))[0] == 200
        await h.relay.conversion.idle()
        emulator.clear_faults()
        attempts = conversion.FEEDBACK_ATTEMPTS
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="retried") == 2 + attempts - 1
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="failed") == 1
        assert (await h.summary())["feedback"] == {"posted": 1, "failed": 1, "pending": 0}
    assert len(no_sleep) == 2 + attempts - 1 and sum(no_sleep) < conversion.MATCH_WINDOW
    assert [f.destination for f in emulator.feedback()] == [number[1:]]


async def test_a_4xx_from_8x8_is_not_retried(relay_harness, emulator, no_sleep) -> None:
    number = fresh_number()
    async with relay_harness() as h:
        assert (await h.send(number))[0] == 202
        emulator.inject("status", status=400, count=1, api="sms")
        assert (await h.logs([mfa_used(number)]))[0] == 200
        await h.relay.conversion.idle()
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="failed") == 1
        assert h.metric("otp_relay_conversion_feedback_total", outcome="success", result="retried") == 0
    assert no_sleep == []


async def test_without_conversion_no_track_no_sink_no_listener(relay_harness, emulator) -> None:
    listener = FakeListener()
    async with relay_harness(listener, CONVERSION="", LOG_TOKEN_FILE="") as h:
        assert (await h.send(fresh_number()))[0] == 202
        assert (await h.logs([]))[0] == 404  # no such route: only the send and receipt paths exist
        assert "conversion" not in await (await h.admin.get("/v1/delivery-summary")).json()
    [message] = emulator.messages()
    assert message.track is None
    assert listener.calls == []


async def test_voice_calls_carry_no_track(relay_harness, emulator) -> None:
    from .conftest import voice_settings  # noqa: PLC0415
    from tests.fixtures.relay import voice_body  # noqa: PLC0415

    async with relay_harness(**voice_settings(emulator)) as h:
        raw = json.dumps(voice_body(fresh_number())).encode()
        assert (await h.public.post("/v1/messages", data=raw, headers=signed_headers(KEY, raw))).status == 202
        [call] = emulator.calls()
        assert "track" not in json.dumps(call.__dict__, default=str)
        assert (await h.summary())["sent"] == 0


async def test_an_enforced_block_refuses_with_403_and_never_calls_8x8(relay_harness, emulator) -> None:
    listener = FakeListener()
    async with relay_harness(listener) as h:
        listener.gate = outcomes.Blocked("+6591", time.time() + 3600, enforced=True)
        status, answer = await h.send(fresh_number())
        assert status == 403
        assert answer["body"]["type"] == conversion.BLOCKED_TYPE
        assert answer["body"]["detail"] == conversion.BLOCKED_DETAIL
        assert 3500 < int(answer["Retry-After"]) <= 3600
        assert emulator.requests() == []
        assert [name for name, _ in listener.calls] == ["check"]
        listener.gate = outcomes.Blocked("+6591", time.time() + 3600, enforced=False)  # monitor mode
        assert (await h.send(fresh_number()))[0] == 202
    assert len(emulator.messages()) == 1
    assert [name for name, _ in listener.calls] == ["check", "check", "sent"]


async def test_the_signed_lift_call_reaches_the_listener(relay_harness, emulator) -> None:
    listener = FakeListener()
    async with relay_harness(listener) as h:
        async def lift(body: dict[str, Any], key: str = KEY) -> tuple[int, Any]:
            raw = json.dumps(body).encode()
            answer = await h.public.post(conversion.LIFT_PATH, data=raw, headers=signed_headers(key, raw))
            return answer.status, await answer.json(content_type=None)

        assert await lift({"key": "+6591"}) == (200, {"lifted": True})
        assert await lift({"key": "GB"}) == (200, {"lifted": False})
        assert (await lift({"key": "GB"}, key="not-a-signing-key"))[0] == 401
        assert (await lift({"key": 7}))[0] == 422
    assert listener.calls == [("lift", "+6591"), ("lift", "GB")]


async def test_a_malformed_subject_is_refused(relay_harness, emulator) -> None:
    async with relay_harness() as h:
        for subject in ("ABC", "A" * 64, 7):
            status, answer = await h.send(fresh_number(), subject=subject)
            assert status == 422 and "subject" in answer["body"]["detail"]
    assert emulator.messages() == []


async def test_replicas_sharing_a_store_report_once(relay_harness, emulator, redis_server: RedisServer) -> None:
    """Two relays on one Redis: the send made by one is matched by the other; both replicas
    see the same event and both run the failure scan; 8x8 gets one feedback per message."""
    shared = {"STATE_URL": redis_server.url, "STATE_PASSWORD_FILE": str(redis_server.password_file),
              "STATE_PREFIX": f"conv-test-{time.monotonic_ns()}"}
    used, unused = fresh_number(), fresh_number()
    async with relay_harness(**shared) as one, relay_harness(**shared) as two:
        assert (await one.send(used, subject=conversion.subject_for(KEY, USER)))[0] == 202
        assert (await one.send(unused))[0] == 202
        event = mfa_used(used)
        assert await two.logs([event]) == (200, {"results": {"matched": 1}})
        assert await one.logs([event]) == (200, {"results": {"replayed": 1}})
        assert await one.logs([mfa_used(used)]) == (200, {"results": {"unknown": 1}})
        for replica in (one, two):
            replica.relay.conversion.failure_after = 0.0
        for replica in (one, two, one):
            await replica.relay.conversion.scan()
        for replica in (one, two):
            await replica.relay.conversion.idle()
    assert sorted((f.destination, f.outcome) for f in emulator.feedback()) == sorted(
        [(used[1:], "success"), (unused[1:], "failure")])
    client = redis_server.client()
    keys = client.keys(f"*{shared['STATE_PREFIX']}*:conv:*")
    assert keys and not [k for k in keys if client.ttl(k) < 0]  # every key expires
    stored = " ".join(keys + [" ".join(client.hgetall(k).values()) for k in keys if client.type(k) == "hash"])
    for secret in (used, used[1:], unused[1:], USER):  # digests only: no number, no user id
        assert secret not in stored


def test_the_options_are_required_together_and_bounded(tmp_path: Path) -> None:
    base = {"OTP_RELAY_SUBACCOUNT": SUBACCOUNT, "OTP_RELAY_API_KEY_FILE": "k", "OTP_RELAY_SIGNING_KEY_FILE": "s"}
    with pytest.raises(config.ConfigError, match="LOG_TOKEN_FILE"):
        config.load([], {**base, "OTP_RELAY_CONVERSION": "true"})
    with pytest.raises(config.ConfigError, match="OTP_RELAY_CONVERSION:"):
        config.load([], {**base, "OTP_RELAY_LOG_TOKEN_FILE": "t"})
    with pytest.raises(config.ConfigError, match="under 15m"):
        config.load([], {**base, "OTP_RELAY_CONVERSION": "true", "OTP_RELAY_LOG_TOKEN_FILE": "t",
                         "OTP_RELAY_CONVERSION_FAILURE_AFTER": "15m"})
    settings = config.load(["--conversion", "true", "--log-token-file", "t"], base)
    assert (settings.conversion, settings.conversion_failure_after) == (True, 600.0)
    assert config.load([], base).conversion is False
