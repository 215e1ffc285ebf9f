"""Contract revision 2: one message, at most one SMS (in-process state; the same rows with
Redis are in test_shared_state.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from tests.fixtures.relay import RelayProcess, otp_body

from .conftest import SIGNING_KEYS, fresh_number, problem, wait_for

KEY = SIGNING_KEYS[1]



def test_derived_key_is_the_documented_formula(shared_relay: RelayProcess, emulator) -> None:
    """A body carrying the key the formula gives is the same message as one without it."""
    body = otp_body(fresh_number(), code="246810")
    joined = "\n".join((body["recipient"], body["code"], body["message_type"], body["text"]))
    keyed = {**body, "idempotency_key": hashlib.sha256(joined.encode()).hexdigest()}
    assert shared_relay.post(body, KEY).status_code == 202
    again = shared_relay.post(keyed, KEY)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert len(emulator.messages()) == 1


def test_the_callers_key_decides(shared_relay: RelayProcess, emulator) -> None:
    number = fresh_number()
    key = "ab" * 32
    first = shared_relay.post(otp_body(number, code="111111", idempotency_key=key), KEY)
    other_text = shared_relay.post(otp_body(number, code="222222", idempotency_key=key), KEY)
    assert (first.status_code, other_text.status_code) == (202, 202)
    assert other_text.headers["Idempotent-Replayed"] == "true" and other_text.json() == first.json()
    assert [m.text for m in emulator.messages()] == ["Your verification code is 111111"]


@pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, 12])
def test_malformed_idempotency_key_is_400(shared_relay: RelayProcess, emulator, bad) -> None:
    response = shared_relay.post(otp_body(fresh_number(), idempotency_key=bad), KEY)
    assert response.status_code == 400
    assert "idempotency_key" in problem(response)["detail"]
    assert emulator.messages() == []


def test_same_message_in_flight_is_409_then_replayed(make_relay, emulator) -> None:
    relay = make_relay()
    emulator.inject("latency", ms=3000)
    body = otp_body(fresh_number())
    first: list = []
    sender = threading.Thread(target=lambda: first.append(relay.post(body, KEY)))
    sender.start()
    wait_for(lambda: len(emulator.requests()) == 1)
    busy = relay.post(body, KEY)
    sender.join(timeout=30)
    assert busy.status_code == 409 and 1 <= int(busy.headers["Retry-After"]) <= 8
    assert first[0].status_code == 202
    after = relay.post(body, KEY)
    assert after.status_code == 202 and after.headers["Idempotent-Replayed"] == "true"
    assert after.json() == first[0].json()
    assert len(emulator.messages()) == 1


def test_8x8_answering_after_the_deadline_is_504_and_one_sms(make_relay, emulator) -> None:
    """8x8 is still working on the message at the relay's deadline (it may take it): the
    caller gets 504 within the deadline (before its own 8 s timeout), its retry gets 504 again
    and 8x8 is asked once. (The emulator drops a message whose client went away; real 8x8 may
    not, which is why the relay must assume it was sent.)"""
    relay = make_relay(DEADLINE="2")
    emulator.inject("latency", ms=8000)
    body = otp_body(fresh_number())
    started = time.monotonic()
    response = relay.post(body, KEY)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert elapsed < 6.0  # the deadline (2 s) plus a loaded machine's overhead, not 8x8's 8 s
    assert relay.post(body, KEY).status_code == 504
    assert len(emulator.requests()) == 1


def test_a_message_that_surely_went_nowhere_may_be_sent_again(shared_relay: RelayProcess, emulator) -> None:
    body = otp_body(fresh_number())
    emulator.inject("status", status=429, retry_after=60)
    assert shared_relay.post(body, KEY).status_code == 503
    number = fresh_number()
    emulator.reject_destination(number)
    rejected = otp_body(number)
    assert shared_relay.post(rejected, KEY).status_code == 502
    assert shared_relay.post(body, KEY).status_code == 202
    assert shared_relay.post(rejected, KEY).status_code == 502  # asked 8x8 again
    assert len(emulator.requests()) == 4
    assert [m.status for m in emulator.messages()] == ["REJECTED", "QUEUED", "REJECTED"]


def test_compressed_body_is_415(shared_relay: RelayProcess, emulator) -> None:
    raw = gzip.compress(json.dumps(otp_body(fresh_number())).encode())
    response = shared_relay.post(raw, KEY, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert "compressed" in problem(response)["detail"]
    assert emulator.requests() == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every POST with ``self.server.answer`` and counts requests."""

    def do_POST(self) -> None:  # noqa: N802
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, location, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirecting_upstream() -> Iterator[tuple[http.server.HTTPServer, http.server.HTTPServer]]:
    """A fake 8x8 answering 307 to a second server on another host name (localhost)."""
    servers = []
    for _ in range(2):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        server.hits = []  # type: ignore[attr-defined]
        server.answer = (202, None, b"")  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    target = servers[1]
    servers[0].answer = (307, f"http://localhost:{target.server_port}/steal", b"")  # type: ignore[attr-defined]
    try:
        yield servers[0], target
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_redirect_from_8x8_is_not_followed(make_relay, redirecting_upstream) -> None:
    upstream, target = redirecting_upstream
    relay = make_relay(base_url=f"http://127.0.0.1:{upstream.server_port}", INSECURE_UPSTREAM="true")
    response = relay.post(otp_body(fresh_number()), KEY)
    assert response.status_code == 502
    details = problem(response)
    assert (details["upstream_status"], details["upstream_code"]) == (307, "REDIRECT")
    assert len(upstream.hits) == 1  # type: ignore[attr-defined]
    assert target.hits == []  # type: ignore[attr-defined]


def test_8x8_error_details_are_capped(make_relay, redirecting_upstream) -> None:
    upstream, _ = redirecting_upstream
    code, message = "E" * 5000, "m" * 50_000  # within the 64 KiB read, so it parses
    upstream.answer = (400, None, json.dumps({"code": code, "message": message}).encode())  # type: ignore[attr-defined]
    relay = make_relay(base_url=f"http://127.0.0.1:{upstream.server_port}", INSECURE_UPSTREAM="true")
    response = relay.post(otp_body(fresh_number()), KEY)
    assert response.status_code == 502
    assert problem(response)["upstream_code"] == "E" * 16
    assert len(response.content) < 1024
    assert "E" * 17 not in relay.logs()
