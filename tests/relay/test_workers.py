"""``OTP_RELAY_WORKERS``: several processes share the public port (SO_REUSEPORT); limits and
idempotency stay exact for the pod because more than one worker requires the shared store."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from otp_relay import config
from tests.fixtures.redis import RedisServer
from tests.fixtures.relay import otp_body

from .conftest import SIGNING_KEYS, fresh_number

KEY = SIGNING_KEYS[1]
CLOSE = {"Connection": "close"}  # a new connection per request, so the kernel spreads them


@pytest.fixture
def two_workers(make_relay, redis_server: RedisServer):
    def start(**settings: str):
        return make_relay(WORKERS="2", STATE_URL=redis_server.url,
                          STATE_PASSWORD_FILE=str(redis_server.password_file),
                          STATE_PREFIX=f"test:workers:{time.monotonic_ns()}", **settings)
    return start


def _workers_that_answered(relay) -> set[int]:
    return {r["worker"] for r in relay.log_records() if r.get("msg") == "send"}


def test_limits_are_the_pods_not_workers_times_the_budget(two_workers, emulator) -> None:
    relay = two_workers(PER_RECIPIENT="3/10m", GLOBAL_LIMIT="8/1h")
    number = fresh_number()
    same_number = [relay.post(otp_body(number, code=f"55{i:04d}"), KEY, headers=CLOSE).status_code
                   for i in range(12)]
    assert same_number == [202] * 3 + [429] * 9
    others = [relay.post(otp_body(fresh_number()), KEY, headers=CLOSE).status_code for _ in range(12)]
    assert others == [202] * 5 + [429] * 7  # 8 for the pod in all: 3 above + 5 here
    assert len(emulator.messages()) == 8
    assert relay.stop() == 0
    assert _workers_that_answered(relay) == {0, 1}  # both workers took part


def test_a_message_sent_at_once_through_both_workers_goes_out_once(two_workers, emulator) -> None:
    relay = two_workers()
    emulator.inject("latency", ms=1000, count=1)
    body = otp_body(fresh_number())
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: relay.post(body, KEY, headers=CLOSE).status_code, range(8)))
    assert statuses.count(202) == 1 and set(statuses[1:]) == {409}, statuses
    assert relay.post(body, KEY, headers=CLOSE).headers["Idempotent-Replayed"] == "true"
    assert len(emulator.messages()) == 1
    assert relay.stop() == 0  # SIGTERM reaches every worker; all drain and the pod exits 0
    assert relay.logs().count('"msg":"stopped"') == 2


def test_more_workers_need_the_shared_store() -> None:
    env = {"OTP_RELAY_SUBACCOUNT": "shop_otp", "OTP_RELAY_API_KEY_FILE": "/k", "OTP_RELAY_SIGNING_KEY_FILE": "/s",
           "OTP_RELAY_WORKERS": "2"}
    with pytest.raises(config.ConfigError, match="needs --state-url"):
        config.load([], env)
    assert config.load([], {**env, "OTP_RELAY_STATE_URL": "redis://127.0.0.1:6379/0"}).workers == 2
    assert config.load([], {**env, "OTP_RELAY_WORKERS": "1"}).workers == 1
