"""The relay's application in this process (aiohttp's test server, the session's 8x8 emulator),
for what needs a state no real configuration reaches."""

from __future__ import annotations

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
