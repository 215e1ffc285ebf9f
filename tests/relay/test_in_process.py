"""The relay's application in this process (aiohttp's test server, the session's 8x8 emulator),
for what needs a state no real configuration reaches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from otp_relay import config
from otp_relay.app import Relay
from otp_relay.state import MemoryState, Timing
from tests.fixtures.relay import otp_body, relay_env, signed_headers

from .conftest import API_KEY, SIGNING_KEYS, SUBACCOUNT, fresh_number

KEY = SIGNING_KEYS[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_store_refuses_one_message_and_recovers_by_itself(emulator, ssl_cert_file: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    """A store full of live keys answers that message 503 + Retry-After; /readyz stays 200 and
    the next message after the oldest key expired is sent (the process needs no restart)."""
    env = relay_env(tmp_path, base_url=emulator.base_url, ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT,
                    api_key=API_KEY, signing_keys=SIGNING_KEYS, PER_RECIPIENT="100/s")
    monkeypatch.setenv("SSL_CERT_FILE", str(ssl_cert_file))
    relay = Relay(config.load([], env))
    clock = Clock()
    relay.state = MemoryState(relay.settings.per_recipient, relay.settings.global_limit,
                              Timing(retention=900, in_flight=7), max_keys=2, clock=clock)
    public, admin = TestClient(TestServer(relay.make_app())), TestClient(TestServer(relay.make_admin_app()))
    async with public, admin:
        async def send() -> tuple[int, dict[str, str]]:
            raw = json.dumps(otp_body(fresh_number())).encode()
            answer = await public.post("/v1/messages", data=raw, headers=signed_headers(KEY, raw))
            return answer.status, dict(answer.headers)

        assert [(await send())[0] for _ in range(2)] == [202, 202]
        status, headers = await send()
        assert (status, headers["Retry-After"]) == (503, "900")
        assert (await admin.get("/readyz")).status == 200
        clock.now += 900  # the oldest keys expire
        assert (await send())[0] == 202
        assert (await admin.get("/readyz")).status == 200
    assert len(emulator.messages()) == 3
    assert relay.metrics.registry.get_sample_value("otp_relay_requests_total", {"outcome": "store_full"}) == 1


async def test_the_canary_skips_the_users_limits_and_has_its_own_cap(emulator, ssl_cert_file: Path,
                                                                    tmp_path: Path, monkeypatch) -> None:
    """The canary number is sent to where a real user's limits would refuse it (per recipient,
    per prefix, the global budget) and costs the users none of their budget; its own cap of
    12 an hour holds; its last attempt shows in the summary without the number."""
    import time as wall  # noqa: PLC0415

    from otp_relay import canary  # noqa: PLC0415

    if wall.time() % 3600 > 3600 - 30:  # the cap is an hour-long fixed window: not across its end
        await asyncio.sleep(3600 - wall.time() % 3600 + 1)
    number = fresh_number()
    user, neighbour, last = fresh_number(), fresh_number(), fresh_number()
    env = relay_env(tmp_path, base_url=emulator.base_url, ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT,
                    api_key=API_KEY, signing_keys=SIGNING_KEYS, PER_RECIPIENT="1/10m", GLOBAL_LIMIT="3/1h",
                    PER_PREFIX="2/1h", CANARY_NUMBER=number)
    monkeypatch.setenv("SSL_CERT_FILE", str(ssl_cert_file))
    relay = Relay(config.load([], env))
    public, admin = TestClient(TestServer(relay.make_app())), TestClient(TestServer(relay.make_admin_app()))
    codes = iter(range(100_000, 200_000))
    async with public, admin:
        async def send(to: str) -> tuple[int, dict]:
            raw = json.dumps(otp_body(to, code=str(next(codes)))).encode()
            answer = await public.post("/v1/messages", data=raw, headers=signed_headers(KEY, raw))
            return answer.status, await answer.json()

        assert (await admin.get("/v1/delivery-summary")).status == 200
        assert "canary" not in await (await admin.get("/v1/delivery-summary")).json()  # none sent yet
        assert (await send(user))[0] == 202
        assert (await send(user))[0] == 429  # a real user's own limit
        sent = [(await send(number))[0] for _ in range(canary.CAP.limit)]
        assert sent == [202] * canary.CAP.limit  # past its per-recipient, prefix and global limits
        summary = await (await admin.get("/v1/delivery-summary")).json()
        assert summary["canary"]["state"] == "sent" and summary["canary"]["sentAt"].endswith("Z")
        # the users' budgets are untouched: the global 3/h still has its 2 tokens, the prefix its 1
        assert (await send(neighbour))[0] == 202
        status, body = await send(last)
        assert (status, body["detail"]) == (429, "limit for numbers with this prefix reached")
        # its own cap
        status, body = await send(number)
        assert (status, body["detail"]) == (429, "the canary number's own cap reached")
        summary = await (await admin.get("/v1/delivery-summary")).json()
    assert summary["canary"] == {"sentAt": summary["canary"]["sentAt"], "state": "rejected", "errorCode": "",
                                 "reason": "canary cap of 12/h reached"}
    assert len([m for m in emulator.messages() if m.destination == number[1:]]) == canary.CAP.limit
    registry = relay.metrics.registry
    assert registry.get_sample_value("otp_relay_canary_sends_total", {"outcome": "accepted"}) == canary.CAP.limit
    assert registry.get_sample_value("otp_relay_canary_sends_total", {"outcome": "capped"}) == 1
    assert registry.get_sample_value("otp_relay_limit_rejections_total", {"limit": "recipient"}) == 1
    assert number not in json.dumps(summary) and number[-4:] not in json.dumps(summary)


def test_a_canary_number_is_validated_like_a_recipient_and_not_echoed(tmp_path: Path, ssl_cert_file: Path) -> None:
    env = relay_env(tmp_path, base_url="https://sms.8x8.com", ssl_cert_file=ssl_cert_file,
                    CANARY_NUMBER="+6512345")
    try:
        config.load([], env)
    except config.ConfigError as exc:
        assert str(exc) == "--canary-number / OTP_RELAY_CANARY_NUMBER: the canary number is not a valid phone number"
    else:
        raise AssertionError("an invalid canary number was accepted")
    assert config.load([], {**env, "OTP_RELAY_CANARY_NUMBER": ""}).canary_number is None
