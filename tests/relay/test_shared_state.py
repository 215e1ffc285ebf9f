"""Idempotency keys and limits shared through a real Redis: exact across replicas and
restarts; the relay fails closed when Redis does not answer."""

from __future__ import annotations

import asyncio
import time

import pytest

from otp_relay.config import Rate
from otp_relay.redis_state import RedisState
from otp_relay.state import ACCEPTED, RELEASE, InFlight, Limited, Proceed, Replay, Timing
from otp_sandbox.pki import CertificateAuthority

from tests.fixtures.redis import RedisServer
from tests.fixtures.relay import otp_body, voice_body

from .conftest import SIGNING_KEYS, fresh_number, problem, voice_settings

KEY = SIGNING_KEYS[1]


@pytest.fixture
def shared_relays(make_relay, redis_server: RedisServer, request):
    """``shared_relays(n, **settings)``: n relays on one Redis, under a prefix of this test's."""
    prefix = f"test:{request.node.name}:{time.monotonic_ns()}"

    def start(count: int = 2, **settings: str):
        return [make_relay(STATE_URL=redis_server.url, STATE_PASSWORD_FILE=str(redis_server.password_file),
                           STATE_PREFIX=prefix, **settings) for _ in range(count)]

    start.prefix = prefix
    return start


def test_a_replayed_request_is_accepted_once_across_replicas(shared_relays, emulator) -> None:
    one, two = shared_relays(2)
    body = otp_body(fresh_number())
    first = one.post(body, KEY)
    again = two.post(body, KEY)
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(emulator.messages()) == 1
    assert one.get("/readyz").json() == {"status": "ready", "state": "shared"}


def test_keys_survive_a_restart(shared_relays, emulator) -> None:
    [relay] = shared_relays(1)
    body = otp_body(fresh_number())
    assert relay.post(body, KEY).status_code == 202
    assert relay.stop() == 0
    [restarted] = shared_relays(1)
    assert restarted.post(body, KEY).headers["Idempotent-Replayed"] == "true"
    assert len(emulator.messages()) == 1


def test_per_recipient_budget_is_exact_across_replicas(shared_relays, emulator) -> None:
    replicas = shared_relays(2, PER_RECIPIENT="2/10m")
    number = fresh_number()
    statuses = [replicas[i % 2].post(otp_body(number, code=f"66{i:04d}"), KEY).status_code for i in range(6)]
    assert statuses == [202, 202, 429, 429, 429, 429]
    assert len(emulator.messages()) == 2  # the channel's budget, not replicas x budget


def test_the_per_recipient_call_window_is_exact_across_replicas(shared_relays, emulator) -> None:
    """Calls have their own window (one Lua script counts both, in separate sets): two replicas
    on one Redis place 2 calls to a number in the hour, not 2 each; texts keep their window."""
    one, two = shared_relays(2, **voice_settings(emulator, VOICE_PER_RECIPIENT="2/1h"), PER_RECIPIENT="3/1h")
    number = fresh_number()
    answers = [(one, two)[i % 2].post(voice_body(number, code=f"55{i:04d}"), KEY) for i in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 429, 429, 429]
    assert {problem(a)["detail"] for a in answers[2:]} == {"call limit for this recipient reached"}
    assert 3590 <= int(answers[-1].headers["Retry-After"]) <= 3600
    assert len(emulator.calls()) == 2
    # the same message again on the other replica is the first call's replay, not a third call
    again = two.post(voice_body(number, code="550000"), KEY)
    assert again.status_code == 202 and again.json() == answers[0].json()
    texts = [(one, two)[i % 2].post(otp_body(number, code=f"56{i:04d}"), KEY).status_code for i in range(4)]
    assert texts == [202, 202, 202, 429]  # texts: their own window (3/1h), calls not in it
    assert len(emulator.calls()) == 2 and len(emulator.messages()) == 3


def test_concurrent_calls_share_a_round_trip_and_keep_their_own_verdicts(redis_server: RedisServer) -> None:
    """Script calls made in one event-loop turn go to Redis as one pipeline; each caller still
    gets the verdict of its own call, in order, and a flushed script cache is reloaded once."""

    async def scenario() -> list[list[object]]:
        state = RedisState(redis_server.url, redis_server.password_file, f"test:pipeline:{time.monotonic_ns()}",
                           Rate(2, 600), Rate(1000, 1), Timing(60, 10))
        try:
            first = await asyncio.gather(*(state.claim(key, number, f"request-{i}") for i, (key, number) in enumerate((
                ("a" * 64, "+6591000001"), ("a" * 64, "+6591000001"), ("b" * 64, "+6591000002"),
                ("c" * 64, "+6591000002"), ("d" * 64, "+6591000002")))))
            redis_server.client().script_flush()
            await asyncio.gather(state.settle("a" * 64, ACCEPTED, "umid-a"), state.settle("b" * 64, RELEASE))
            second = await asyncio.gather(state.claim("a" * 64, "+6591000001", "request-5"),
                                          state.claim("b" * 64, "+6591000003", "request-6"))
            return [first, second]
        finally:
            await state.close()

    first, second = asyncio.run(scenario())
    assert [type(v) for v in first] == [Proceed, InFlight, Proceed, Proceed, Limited]
    assert first[4].limit == "recipient"
    assert second == [Replay("umid-a"), Proceed()]


def test_global_limit_is_exact_across_replicas(shared_relays, emulator) -> None:
    replicas = shared_relays(2, GLOBAL_LIMIT="3/m")
    statuses = [replicas[i % 2].post(otp_body(fresh_number()), KEY).status_code for i in range(6)]
    assert statuses == [202, 202, 202, 429, 429, 429]
    limited = replicas[0].post(otp_body(fresh_number()), KEY)
    assert 1 <= int(limited.headers["Retry-After"]) <= 20


def test_every_key_in_redis_expires(shared_relays, redis_server: RedisServer, emulator) -> None:
    [relay] = shared_relays(1, PER_RECIPIENT="5/10m", PER_PREFIX="20/1h")
    for _ in range(3):
        assert relay.post(otp_body(fresh_number()), KEY).status_code == 202
    client = redis_server.client()
    keys = list(client.scan_iter(match="{" + shared_relays.prefix + "}:*"))
    windows = [key for key in keys if ":w:" in key]
    # 3 idempotency keys, 3 recipient windows, the global bucket; the policy's windows: the
    # prefixes of the numbers (1 or 2: they are sequential) and the country's hour and day
    assert len(keys) - len(windows) == 7 and 3 <= len(windows) <= 4
    ttls = {key: client.pttl(key) for key in keys}
    assert all(0 < ttl <= 30 * 60 * 1000 for key, ttl in ttls.items() if key not in windows), ttls
    assert all(0 < ttls[key] <= (24 * 3600 + 1) * 1000 for key in windows), ttls
    assert not any(number[1:] in "".join(keys) for number in [m.destination for m in emulator.messages()])


def test_unreachable_redis_fails_closed_and_recovers(make_relay, own_redis_server: RedisServer,
                                                     emulator) -> None:
    relay = make_relay(STATE_URL=own_redis_server.url, STATE_PASSWORD_FILE=str(own_redis_server.password_file))
    assert relay.post(otp_body(fresh_number()), KEY).status_code == 202
    own_redis_server.stop()
    response = relay.post(otp_body(fresh_number()), KEY)
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert "state store" in problem(response)["detail"]
    ready = relay.get("/readyz")
    assert ready.status_code == 503 and ready.json()["state"] == "unreachable"
    assert relay.metric("otp_relay_state_up") == 0
    assert relay.metric("otp_relay_requests_total", outcome="state_unavailable") == 1
    assert len(emulator.messages()) == 1  # nothing sent without the store
    own_redis_server.start()
    deadline = time.monotonic() + 20
    while relay.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert relay.post(otp_body(fresh_number()), KEY).status_code == 202


def test_wrong_redis_password_is_not_ready(make_relay, redis_server: RedisServer, tmp_path, emulator) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    relay = make_relay(wait_ready=False, STATE_URL=redis_server.url, STATE_PASSWORD_FILE=str(wrong))
    assert relay.get("/readyz").status_code == 503
    assert relay.post(otp_body(fresh_number()), KEY).status_code == 503
    assert emulator.requests() == []
    assert "not-the-password" not in relay.logs() and redis_server.password not in relay.logs()


def test_rediss_with_a_certificate_from_an_untrusted_ca_is_refused(make_relay, tmp_path, emulator) -> None:
    """A store presenting a certificate the relay's trust (SSL_CERT_FILE, the sandbox CA) did
    not sign is never used: not ready, sends refused, nothing reaches 8x8 and the password is
    never sent over that connection (the handshake fails first)."""
    stranger = CertificateAuthority(tmp_path / "stranger-ca", name="not the sandbox CA")
    workdir = tmp_path / "redis-stranger"
    workdir.mkdir()
    server = RedisServer(workdir, "stranger-redis-password", ca=stranger).start()
    try:
        relay = make_relay(wait_ready=False, STATE_URL=server.url, STATE_PASSWORD_FILE=str(server.password_file))
        deadline = time.monotonic() + 5  # several tries of the store, none may succeed
        while time.monotonic() < deadline:
            assert relay.get("/readyz").status_code == 503
            time.sleep(0.5)
        assert relay.post(otp_body(fresh_number()), KEY).status_code == 503
        assert emulator.requests() == []
        assert relay.metric("otp_relay_state_up") == 0
    finally:
        server.stop()


def test_rediss_is_verified_against_ssl_cert_file(make_relay, tls_redis_server: RedisServer, emulator) -> None:
    """rediss:// (the CRD's tls: true): the store's certificate is checked against the trust the
    relay uses everywhere (SSL_CERT_FILE, here the sandbox CA)."""
    assert tls_redis_server.url.startswith("rediss://localhost:")
    settings = {"STATE_URL": tls_redis_server.url, "STATE_PASSWORD_FILE": str(tls_redis_server.password_file)}
    one, two = make_relay(**settings), make_relay(**settings)
    body = otp_body(fresh_number())
    assert one.post(body, KEY).status_code == 202
    assert two.post(body, KEY).headers["Idempotent-Replayed"] == "true"
    assert len(emulator.messages()) == 1
