"""Pure parts: settings, limits, idempotency state, the meaning of 8x8 answers."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from otp_relay import config
from otp_relay.keys import parse_api_key, parse_signing_keys
from otp_relay.limits import RecipientWindow, TokenBucket, retry_after_header
from otp_relay.upstream import (
    Accepted, EightByEight, NotSent, Rejected, RetryPolicy, Unknown, interpret, parse_retry_after,
)
from otp_relay.state import (
    ACCEPTED, RELEASE, UNKNOWN, InFlight, Limited, MemoryState, Proceed, Replay, Timing,
    Full,
    MaybeSent,
)
from tests.fixtures.relay import relay_command

BASE_ENV = {"OTP_RELAY_SUBACCOUNT": "shop_otp", "OTP_RELAY_API_KEY_FILE": "/k/api",
            "OTP_RELAY_SIGNING_KEY_FILE": "/k/sig"}


def test_settings_from_env_with_flags_winning() -> None:
    env = {**BASE_ENV, "OTP_RELAY_SMS_REGION": "eu", "OTP_RELAY_ALLOWED_COUNTRIES": "sg, my",
           "OTP_RELAY_PER_RECIPIENT": "5/10m", "OTP_RELAY_LISTEN": "127.0.0.1:9000"}
    settings = config.load(["--listen", "0.0.0.0:8443", "--path-prefix", "/prod/"], env)
    assert (settings.host, settings.port) == ("0.0.0.0", 8443)
    assert settings.base_url == "https://sms.8x8.uk"
    assert settings.allowed_countries == {"SG", "MY"}
    assert settings.per_recipient == config.Rate(5, 600.0)
    assert settings.global_limit == config.Rate(100, 1.0)
    assert settings.path_prefix == "/prod"


def test_base_url_overrides_region() -> None:
    settings = config.load([], {**BASE_ENV, "OTP_RELAY_SMS_BASE_URL": "https://127.0.0.1:9/"})
    assert settings.base_url == "https://127.0.0.1:9"


@pytest.mark.parametrize(("env", "message"), [
    ({"OTP_RELAY_SUBACCOUNT": ""}, "--subaccount / OTP_RELAY_SUBACCOUNT: required"),
    ({"OTP_RELAY_SMS_REGION": "mars"}, "unknown region 'mars'"),
    ({"OTP_RELAY_ALLOWED_COUNTRIES": "SG,XX"}, "unknown ISO 3166 alpha-2 code(s): XX"),
    ({"OTP_RELAY_PER_RECIPIENT": "5 per minute"}, "--per-recipient / OTP_RELAY_PER_RECIPIENT: expected COUNT/DURATION"),
    ({"OTP_RELAY_SMS_BASE_URL": "http://127.0.0.1:9"}, "http:// only with --insecure-upstream"),
    ({"OTP_RELAY_IDEMPOTENCY_RETENTION": "10m"}, "must be at least 15m"),
    ({"OTP_RELAY_STATE_URL": "http://user:pw@redis"}, "expected a redis:// or rediss:// URL"),
    ({"OTP_RELAY_MAX_CONNECTIONS": "0"}, "expected a positive whole number"),
    ({"OTP_RELAY_ADMIN_LISTEN": "9090"}, "--admin-listen / OTP_RELAY_ADMIN_LISTEN: expected HOST:PORT"),
    ({"OTP_RELAY_ENCODING": "utf8"}, "use one of AUTO, GSM7, UCS2"),
    ({"OTP_RELAY_SENDER": "S" * 17}, "at most 16 characters"),
    ({"OTP_RELAY_TLS_CERT_FILE": "/c"}, "set both"),
    ({"OTP_RELAY_PATH_PREFIX": "prod"}, "must start with '/'"),
    ({"OTP_RELAY_LISTEN": "8080"}, "expected HOST:PORT"),
    ({"OTP_RELAY_STATE_URL": "rediss://redis:6380/0?ssl_cert_reqs=none"},
     "ssl_cert_reqs=none would turn off the check of the store's TLS certificate"),
    ({"OTP_RELAY_STATE_URL": "rediss://redis:6380/0?ssl_check_hostname=False"}, "ssl_check_hostname=False"),
])
def test_bad_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load([], {**BASE_ENV, **env})


def test_cli_exits_2_with_the_reason() -> None:
    result = subprocess.run(relay_command(), capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "OTP_RELAY_SUBACCOUNT": "x"})
    assert result.returncode == 2
    assert "OTP_RELAY_SUBACCOUNT" in result.stderr


def test_rates() -> None:
    assert config.Rate.parse("20/1h") == config.Rate(20, 3600.0)
    assert config.Rate.parse("100/s") == config.Rate(100, 1.0)
    assert config.Rate.parse("5/1h30m") == config.Rate(5, 5400.0)  # the CRD accepts it
    for bad in ("0/s", "5/0m", "5/d", "five/m", "5/", "5/1m1h"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):  # the message quotes what was wrong
            config.Rate.parse(bad)


def test_http_upstream_needs_the_insecure_flag() -> None:
    env = {**BASE_ENV, "OTP_RELAY_SMS_BASE_URL": "http://127.0.0.1:9", "OTP_RELAY_INSECURE_UPSTREAM": "true"}
    assert config.load([], env).base_url == "http://127.0.0.1:9"


def test_state_url_errors_never_echo_the_url() -> None:
    with pytest.raises(config.ConfigError) as error:
        config.load([], {**BASE_ENV, "OTP_RELAY_STATE_URL": "http://user:s3cret@redis"})
    assert "s3cret" not in str(error.value)


def test_signing_key_lines() -> None:
    assert parse_signing_keys("a\n\n  b \r\n# retired: c\n  # d\n") == ["a", "b"]
    assert parse_signing_keys("\n \n# nothing\n") == []  # revokes every key


def test_api_key_file_holds_exactly_one_key() -> None:
    assert parse_api_key("# 8x8 key\n sk-1 \n\n") == "sk-1"
    for bad in ("", "# only a comment\n", "sk-1\nsk-2\n"):
        with pytest.raises(ValueError, match="exactly one API key"):
            parse_api_key(bad)


def test_recipient_window_slides() -> None:
    window = RecipientWindow(config.Rate(2, 60))
    for t in (0.0, 10.0):
        assert window.retry_after("+1", t) is None
        window.record("+1", t)
    assert window.retry_after("+1", 20.0) == pytest.approx(40.0)
    assert window.retry_after("+2", 20.0) is None
    assert window.retry_after("+1", 60.5) is None  # the first send left the window


def test_recipient_window_memory_is_bounded() -> None:
    window = RecipientWindow(config.Rate(1, 10), max_recipients=3)
    for i in range(10):
        window.record(f"+{i}", float(i * 20))  # each one outside the others' window
    assert len(window) <= 3
    busy = RecipientWindow(config.Rate(1, 1000), max_recipients=10)
    for i in range(25):
        busy.record(f"+{i}", float(i))  # all still inside the window
    assert len(busy) <= 10
    assert busy.retry_after("+24", 30.0) is not None  # the newest are still limited


def test_token_bucket() -> None:
    bucket = TokenBucket(config.Rate(2, 1), now=0.0)
    for _ in range(2):
        assert bucket.retry_after(0.0) is None
        bucket.take()
    assert bucket.retry_after(0.0) == pytest.approx(0.5)
    assert bucket.retry_after(0.5) is None
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"


def test_interpreting_8x8_answers() -> None:
    umid = "0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f"
    assert interpret(200, b'{"umid":"%s","status":{"code":"QUEUED"}}' % umid.encode()) == Accepted(umid)
    for bad in ('"u1"', '"a\\nb"', '"%s"' % ("a" * 65), "7", '""'):  # only hex and dashes go in keys and logs
        assert isinstance(interpret(200, b'{"umid":%s}' % bad.encode()), Unknown), bad
    assert interpret(200, b'{"umid":"u1","status":{"code":"REJECTED","description":"blocked"}}') == Rejected(200, "REJECTED", "blocked")
    assert interpret(400, b'{"code":1002,"message":"Invalid MSISDN"}') == Rejected(400, "1002", "Invalid MSISDN")
    assert interpret(502, b"<html>") == Rejected(502, "502", "")
    assert isinstance(interpret(200, b"not json"), Unknown)
    assert interpret(307, b"") == Rejected(307, "REDIRECT", "8x8 answered with a redirect; not followed")
    capped = interpret(400, b'{"code": "' + b"9" * 5000 + b'\\n", "message": "' + b"m" * 5000 + b'"}')
    assert capped == Rejected(400, "9" * 16, "m" * 200)
    assert interpret(429, b"") is None and interpret(503, b"") is None


async def test_no_attempt_without_time_left() -> None:
    client = EightByEight("https://127.0.0.1:9", "shop_otp", RetryPolicy(), lambda status, seconds: None)
    outcome, attempts = await client.send("key", {}, deadline=time.monotonic() + 0.05)
    assert (outcome, attempts) == (NotSent("no time left before the deadline"), 0)


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("7", 0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == pytest.approx(6.0)
    assert parse_retry_after("soon", 0) is None
    policy = RetryPolicy()
    assert policy.backoff(1, rng=lambda: 1.0) == pytest.approx(0.1)
    assert policy.backoff(10, rng=lambda: 1.0) == pytest.approx(1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_state_keys_through_their_life() -> None:
    clock = Clock()
    state = MemoryState(config.Rate(100, 60), config.Rate(100, 1), Timing(retention=900, in_flight=7),
                        clock=clock)
    assert await state.claim("k1", "+6591234567", "r1") == Proceed()
    assert await state.claim("k1", "+6591234567", "r2") == InFlight(7.0)
    await state.settle("k1", ACCEPTED, "umid-1")
    assert await state.claim("k1", "+6591234567", "r3") == Replay("umid-1")
    clock.now += 899
    assert await state.claim("k1", "+6591234567", "r4") == Replay("umid-1")
    clock.now += 1
    assert await state.claim("k1", "+6591234567", "r5") == Proceed()  # retention over: a new message
    await state.settle("k1", RELEASE)
    assert await state.claim("k1", "+6591234567", "r6") == Proceed()  # surely not sent: free again
    await state.settle("k1", UNKNOWN)
    assert await state.claim("k1", "+6591234567", "r7") == MaybeSent()


async def test_memory_state_claim_never_settled_turns_unknown() -> None:
    clock = Clock()
    state = MemoryState(config.Rate(100, 60), config.Rate(100, 1), Timing(retention=900, in_flight=7), clock=clock)
    assert await state.claim("k", "+6591234567", "r1") == Proceed()
    clock.now += 7  # the claiming relay died mid-send
    assert await state.claim("k", "+6591234567", "r2") == MaybeSent()
    assert await state.claim("k", "+6591234567", "r3") == MaybeSent()


async def test_memory_state_limits_and_bound() -> None:
    clock = Clock()
    state = MemoryState(config.Rate(1, 60), config.Rate(100, 1), Timing(900, 7), max_keys=2, clock=clock)
    assert await state.claim("a", "+6591234567", "r") == Proceed()
    assert await state.claim("b", "+6591234567", "r") == Limited("recipient", 60.0)
    assert await state.claim("b", "+6591234568", "r") == Proceed()
    # full of live keys: refuse this one, forget nothing; retry when the oldest expires
    assert await state.claim("c", "+6591234569", "r") == Full(900.0)
    assert await state.claim("a", "+6591234567", "r") == InFlight(7.0)
    clock.now += 900
    assert await state.claim("c", "+6591234569", "r") == Proceed()  # a and b expired
    assert len(state) == 1


async def test_a_recipient_window_emptied_by_a_refused_claim_still_decides() -> None:
    """A claim that finds all of a recipient's sends expired, then is refused by a later check
    (here: the store is full), leaves that recipient's window empty; the next claim to the
    number is still decided (it once raised IndexError: an internal error for the caller)."""
    clock = Clock()
    state = MemoryState(config.Rate(1, 60), config.Rate(100, 1), Timing(900, 7), max_keys=1, clock=clock)
    assert await state.claim("a", "+6591234567", "r") == Proceed()
    clock.now += 61
    assert await state.claim("b", "+6591234567", "r") == Full(839.0)
    assert await state.claim("c", "+6591234567", "r") == Full(839.0)


def test_redis_is_imported_only_with_a_state_store() -> None:
    """Without ``--state-url`` the relay never loads redis-py (~7 MB of every worker's RSS)."""
    code = "import sys, otp_relay.cli, otp_relay.app; print('redis' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_limit_the_in_process_store_cannot_hold_is_refused_at_start() -> None:
    env = {**BASE_ENV, "OTP_RELAY_GLOBAL_LIMIT": "200/s"}
    with pytest.raises(config.ConfigError) as error:
        config.load([], env)
    message = str(error.value)
    assert "--global-limit" in message and "361,600 messages" in message and "200,000 keys" in message
    assert config.load([], {**env, "OTP_RELAY_MAX_IDEMPOTENCY_KEYS": "400000"}).max_idempotency_keys == 400_000
    assert config.load([], {**env, "OTP_RELAY_STATE_URL": "redis://127.0.0.1:6379/0"}).state_url  # Redis holds it
    assert config.keys_needed(config.load([], BASE_ENV).global_limit) == 180_800  # the defaults fit: 100/s, 30m + 7s


def test_the_tls_store_client_checks_certificate_and_host_name(tmp_path) -> None:
    from otp_relay.redis_state import RedisState  # noqa: PLC0415

    ca = tmp_path / "ca.pem"
    state = RedisState("rediss://redis.example:6380/0", None, "p", config.Rate(1, 1), config.Rate(1, 1),
                       Timing(900, 7), ca_file=ca)
    kwargs = state.client.connection_pool.connection_kwargs
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"], kwargs["ssl_ca_certs"]) == (
        "required", True, str(ca))
    settings = config.load([], {**BASE_ENV, "OTP_RELAY_STATE_URL": "rediss://redis.example:6380/0",
                                "OTP_RELAY_STATE_CA_FILE": str(ca)})
    assert settings.state_ca_file == ca


def test_request_ids_are_distinct_random_hex_across_pool_refills() -> None:
    """X-Request-Id (and 8x8's clientMessageId): 32 lowercase hex digits, never repeated, also
    where one pooled random read ends and the next begins."""
    from otp_relay.pipeline import RequestIds  # noqa: PLC0415

    ids = RequestIds(batch=4)
    drawn = [ids.next() for _ in range(10)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in drawn)
    assert len(set(drawn)) == len(drawn)
