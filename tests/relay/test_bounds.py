"""Denial-of-service bounds against the real process: slow and idle clients, too many
connections or requests, log floods, shutdown with stalled clients."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.relay import RelayProcess, otp_body, signed_headers

from .conftest import SIGNING_KEYS, fresh_number, wait_for

KEY = SIGNING_KEYS[1]
SLOW_CONNECTIONS = 3000


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _port(relay: RelayProcess) -> int:
    return int(relay.url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def slow_clients() -> Iterator[list[socket.socket]]:
    """Sockets the test opens; all closed at teardown. Raises the soft fd limit if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, SLOW_CONNECTIONS + 1024)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    sockets: list[socket.socket] = []
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_slow(port: int, count: int, into: list[socket.socket], partial: bytes) -> None:
    """``count`` connections that each send the start of a request and then nothing."""
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(partial)
        into.append(sock)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.01)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, BlockingIOError):
        return False


def _signed_post(relay: RelayProcess) -> tuple[int, float]:
    raw = json.dumps(otp_body(fresh_number())).encode()
    started = time.monotonic()
    response = httpx.post(relay.url + "/v1/messages", content=raw, headers=signed_headers(KEY, raw), timeout=30)
    return response.status_code, time.monotonic() - started


def test_thousands_of_slow_clients_do_not_lock_out_signed_requests(make_relay, emulator, slow_clients) -> None:
    relay = make_relay(MAX_CONNECTIONS="500", HEADER_TIMEOUT="30")
    pid = relay.process.pid
    assert _signed_post(relay)[0] == 202  # warm: imports, pools
    baseline = _rss_kib(pid)
    _open_slow(_port(relay), SLOW_CONNECTIONS, slow_clients, b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n")
    results = [_signed_post(relay) for _ in range(10)]
    assert [status for status, _ in results] == [202] * 10
    assert max(seconds for _, seconds in results) < 6.0  # the relay's deadline
    assert relay.metric("otp_relay_open_connections") <= 500
    assert relay.metric("otp_relay_connections_dropped_total", reason="evicted") >= SLOW_CONNECTIONS - 500
    grown = _rss_kib(pid) - baseline
    assert grown < 32 * 1024, f"RSS grew by {grown} KiB with {SLOW_CONNECTIONS} slow clients"


def test_slow_headers_and_idle_connections_are_closed(make_relay, emulator, slow_clients) -> None:
    relay = make_relay(HEADER_TIMEOUT="1", IDLE_TIMEOUT="1")
    port = _port(relay)
    _open_slow(port, 20, slow_clients, b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n")
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow_clients.append(idle)
    deadline = time.monotonic() + 15
    while not all(_closed_by_peer(s) for s in slow_clients) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_closed_by_peer(s) for s in slow_clients)
    assert relay.metric("otp_relay_connections_dropped_total", reason="timeout") >= 20  # the slow ones


def test_slow_body_is_408(make_relay, emulator) -> None:
    relay = make_relay(BODY_TIMEOUT="1")
    raw = json.dumps(otp_body(fresh_number())).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(KEY, raw).items())
    with socket.create_connection(("127.0.0.1", _port(relay)), timeout=15) as sock:
        sock.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(raw)}\r\n{head}\r\n"
                     .encode() + raw[:10])
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
    assert emulator.requests() == []


def test_requests_over_the_in_flight_cap_get_503_fast(make_relay, emulator) -> None:
    relay = make_relay(MAX_IN_FLIGHT="2")
    emulator.inject("latency", ms=4500, count=2)  # under the relay's 5 s deadline
    results: list[tuple[int, float]] = []
    threads = [threading.Thread(target=lambda: results.append(_signed_post(relay))) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while len(emulator.requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, seconds = _signed_post(relay)
    for thread in threads:
        thread.join(timeout=30)
    assert (status, seconds < 3.5) == (503, True)  # at once, not after the two in flight (4.5 s)
    assert sorted(s for s, _ in results) == [202, 202]
    assert relay.metric("otp_relay_requests_total", outcome="overloaded") == 1


def test_unsigned_floods_are_logged_within_a_budget(make_relay, emulator) -> None:
    relay = make_relay()
    with httpx.Client(timeout=10) as client:
        for _ in range(300):
            response = client.post(relay.url + "/v1/messages", content=b"{}",
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 401
    left_out = relay.metric("otp_relay_log_lines_suppressed_total")
    relay.stop()
    lines = [r for r in relay.log_records() if r.get("msg") == "send"]
    assert len(lines) < 100 and len(lines) + left_out == 300, (len(lines), left_out)
    assert any(r.get("suppressed") for r in lines)  # the lines that go out say how many were left out


def test_sigterm_does_not_wait_for_stalled_clients(make_relay, emulator, slow_clients) -> None:
    """Slow headers and a body that never finishes: SIGTERM still exits at once (the drain
    deadline, 25 s, is for sends in flight, not for clients that stall)."""
    relay = make_relay(HEADER_TIMEOUT="60", BODY_TIMEOUT="60", BODY_MIN_RATE="0", SHUTDOWN_TIMEOUT="25")
    port = _port(relay)
    _open_slow(port, 200, slow_clients, b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n")
    raw = json.dumps(otp_body(fresh_number())).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(KEY, raw).items())
    stalled = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow_clients.append(stalled)
    stalled.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(raw)}\r\n{head}\r\n"
                    .encode() + raw[:10])
    deadline = time.monotonic() + 15
    while relay.metric("otp_relay_body_readers") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relay.metric("otp_relay_body_readers") == 1  # the stalled body is being read
    assert relay.metric("otp_relay_in_flight_requests") == 0  # unsigned until it is in
    started = time.monotonic()
    relay.process.send_signal(15)
    assert relay.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 5
    assert emulator.requests() == []


def test_clients_that_hang_up_mid_body_are_client_aborts(make_relay, emulator) -> None:
    """A client that sends headers and part of the body, then closes: never an internal error
    (the dashboard's 5xx panel), never a traceback line; counted as ``client_abort``."""
    relay = make_relay()
    raw = json.dumps(otp_body(fresh_number())).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(KEY, raw).items())
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", _port(relay)), timeout=10) as sock:
            sock.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Length: {len(raw)}\r\n"
                         f"{head}\r\n".encode() + raw[:10])
            time.sleep(0.01)
    wait_for(lambda: relay.metric("otp_relay_requests_total", outcome="client_abort") == 30, timeout=10)
    assert relay.metric("otp_relay_requests_total", outcome="internal_error") == 0
    relay.stop()
    records = relay.log_records()
    assert not [r for r in records if r.get("level") == "error" or "exception" in r]
    assert len([r for r in records if r.get("outcome") == "client_abort"]) <= 30
    assert emulator.requests() == []


def _send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:  # the relay closed it: what the test wants
        pass


def test_trickling_unsigned_bodies_never_hold_what_signed_sends_need(make_relay, emulator, slow_clients) -> None:
    """400 unsigned connections send headers announcing a 16,000-byte body and then trickle: they
    take no in-flight slot (only signed requests do), readers are a bounded pool whose oldest are
    evicted, and the sweep drops bodies slower than the minimum rate."""
    relay = make_relay(BODY_TIMEOUT="30")
    port = _port(relay)
    head = (b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            b"Content-Length: 16000\r\nX-Otp-Timestamp: 1\r\nX-Otp-Signature: v1=00\r\n\r\n{")
    _open_slow(port, 400, slow_clients, head)
    results = [_signed_post(relay) for _ in range(5)]
    assert [status for status, _ in results] == [202] * 5
    assert max(seconds for _, seconds in results) < 3.0
    assert relay.metric("otp_relay_connections_dropped_total", reason="evicted") >= 400 - 64  # --max-body-readers
    wait_for(lambda: relay.metric("otp_relay_body_readers") == 0, timeout=10)  # too slow: dropped
    assert relay.metric("otp_relay_connections_dropped_total", reason="slow_body") >= 1
    assert relay.metric("otp_relay_requests_total", outcome="overloaded") == 0


def test_megabyte_header_blocks_leave_memory_bounded(make_relay, emulator, slow_clients) -> None:
    """300 clients each sending ~1 MB of header lines (aiohttp alone keeps up to 128 fields of
    8 KiB a connection): each is answered 431 once its block passes 8 KiB."""
    relay = make_relay(HEADER_TIMEOUT="30")
    pid, port = relay.process.pid, _port(relay)
    assert _signed_post(relay)[0] == 202  # warm: imports, pools
    baseline = _rss_kib(pid)
    block = b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"a" * 8000) for i in range(125))
    sockets = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        slow_clients.append(sock)
        sockets.append(sock)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda sock: _send_all(sock, block), sockets))
    wait_for(lambda: relay.metric("otp_relay_connections_dropped_total", reason="headers_too_large") == 300
             or relay.metric("otp_relay_open_connections") == 300, timeout=20)  # all read, or all held
    grown = _rss_kib(pid) - baseline
    assert grown <= 25 * 1024, f"RSS grew by {grown} KiB with 300 megabyte header blocks"
    assert relay.metric("otp_relay_connections_dropped_total", reason="headers_too_large") == 300
    assert _signed_post(relay)[0] == 202


def test_the_admin_listener_has_its_own_connection_guard(make_relay, emulator, slow_clients) -> None:
    relay = make_relay()
    admin_port = int(relay.admin_url.rsplit(":", 1)[1])
    _open_slow(admin_port, 100, slow_clients, b"GET /metrics HTTP/1.1\r\nHost: relay\r\n")
    # A new connection, as the kubelet probes (its prober disables keep-alive): the relay may
    # have evicted the test client's idle keep-alive one, the oldest it holds.
    assert httpx.get(relay.admin_url + "/readyz", timeout=10).status_code == 200
    wait_for(lambda: relay.metric("otp_relay_admin_connections_dropped_total", reason="evicted") >= 100 - 64,
             timeout=10)  # the relay accepts the last of them a moment later
