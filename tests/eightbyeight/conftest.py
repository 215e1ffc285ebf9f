"""Fixtures for the 8x8 emulator tests: clients that check every answer against 8x8's schemas
(spec/README.md), and a loopback receiver for delivery receipts and voice session summaries."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from otp_sandbox.eightbyeight import EightByEightEmulator
from otp_sandbox.pki import CertificateAuthority

SUB, KEY = "emu_test", "emu-key-1"
CALLER_ID = "+6568332048"  # the subaccount's whitelisted caller ID
SCHEMA = json.loads((Path(__file__).parent / "spec" / "sms-api.schema.json").read_text())
VOICE_SCHEMA = json.loads((Path(__file__).parent / "spec" / "voice-api.schema.json").read_text())
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER
assert {"date-time", "uuid"} <= set(FORMATS.checkers), "install the test extras (rfc3339-validator)"


def validate(instance: Any, definition: str, schema: dict[str, Any] = SCHEMA) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` is a valid 8x8 ``definition``
    (of the SMS schemas, or of ``schema``)."""
    jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{definition}"},
                                    format_checker=FORMATS).validate(instance)


def validate_voice(instance: Any, definition: str) -> None:
    validate(instance, definition, VOICE_SCHEMA)


class Client:
    """Sends to the emulator's 8x8 paths and validates every answer against the schemas."""

    def __init__(self, http: httpx.Client, emu: EightByEightEmulator) -> None:
        self.http, self.emu = http, emu

    def send(self, body: Any, *, key: str | None = KEY, sub: str = SUB, batch: bool = False,
             content: bytes | None = None, content_type: str = "application/json") -> httpx.Response:
        path = f"/api/v1/subaccounts/{sub}/messages" + ("/batch" if batch else "")
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = content if content is not None else json.dumps(body).encode()
        response = self.http.post(self.emu.base_url + path, content=data, headers=headers)
        if response.status_code == 200:
            validate(response.json(), "BatchSmsResponse" if batch else "SmsResponse")
        else:
            validate(response.json(), "ErrorResponse")
        return response


    def feedback(self, umid: str, body: Any, *, key: str | None = KEY, sub: str = SUB,
                 content: bytes | None = None, content_type: str = "application/json") -> httpx.Response:
        """``POST .../messages/{umid}/feedback``: a 200 has no content, anything else is 8x8's
        ErrorResponse (checked)."""
        if content is None and isinstance(body, dict) and set(body) <= {"outcome", "timestamp"}:
            with contextlib.suppress(jsonschema.ValidationError):
                validate(body, "SmsFeedback")  # bodies the tests mean as valid stay valid
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = content if content is not None else json.dumps(body).encode()
        response = self.http.post(f"{self.emu.base_url}/api/v1/subaccounts/{sub}/messages/{umid}/feedback",
                                  content=data, headers=headers)
        if response.status_code == 200:
            assert response.content == b"", "8x8 answers a feedback with no content"
        else:
            validate(response.json(), "ErrorResponse")
        return response


class VoiceClient:
    """Sends to the emulator's Voice API paths and validates every answer against the schemas."""

    def __init__(self, http: httpx.Client, emu: EightByEightEmulator) -> None:
        self.http, self.emu = http, emu

    def call(self, body: Any, *, key: str | None = KEY, sub: str = SUB, content: bytes | None = None,
             content_type: str = "application/json") -> httpx.Response:
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = content if content is not None else json.dumps(body).encode()
        response = self.http.post(f"{self.emu.base_url}/api/v1/subaccounts/{sub}/callflows", content=data,
                                  headers=headers)
        validate_voice(response.json(), "CallflowResponse" if response.status_code == 200
                       else "CallflowErrorResponse")
        return response

    def webhooks(self, method: str, body: Any = None, *, kind: str | None = None, key: str | None = KEY,
                 sub: str = SUB) -> httpx.Response:
        path = f"/api/v1/subaccounts/{sub}/webhooks" + (f"/{kind}" if kind else "")
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        response = self.http.request(method, self.emu.base_url + path, headers=headers,
                                     json=body if body is not None else None)
        if response.status_code != 200:
            validate_voice(response.json(), "WebhookErrorResponse")
        elif kind is None:
            validate_voice(response.json(), "WebhooksResponse")
        return response


def callflow(destination: str = "+6591234567", text: str = "Your code is 1 2 3 4 5 6", *,
             source: str = CALLER_ID, profile: str = "en-GB-Emma", **say: Any) -> dict[str, Any]:
    """A voice OTP callflow: makeCall, say, hangup."""
    return {"callflow": [
        {"action": "makeCall", "params": {"source": source, "destination": destination}},
        {"action": "say", "params": {"text": text, "voiceProfile": profile, **say}},
        {"action": "hangup"}]}


@pytest.fixture
def emu(sms_emulator: EightByEightEmulator) -> EightByEightEmulator:
    sms_emulator.add_subaccount(SUB, KEY, caller_ids=[CALLER_ID])
    sms_emulator.clear()
    return sms_emulator


@pytest.fixture
def voice(sandbox_ca, emu: EightByEightEmulator) -> Iterator[VoiceClient]:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox_ca.cert_path))) as http:
        yield VoiceClient(http, emu)


@pytest.fixture
def client(sandbox_ca, emu: EightByEightEmulator) -> Iterator[Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox_ca.cert_path))) as http:
        yield Client(http, emu)


@dataclass
class Received:
    at: float  # time.monotonic()
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    """A loopback HTTP server taking delivery receipts; ``answers[path]`` scripts the status
    codes for successive POSTs to ``path`` (then 200), ``delays[path]`` the seconds to wait first."""

    url: str
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` receipts posted to ``path`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [r for r in self.received if r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(got)} of {count} receipts to {path} arrived within {timeout} s")


def wait_settled(emu: EightByEightEmulator, timeout: float = 30.0) -> None:
    """Until no receipt or session summary is pending or being retried (bounded)."""
    deadline = time.monotonic() + timeout
    while emu.receipts()["pending"]:
        assert time.monotonic() < deadline, "receipts still pending"
        time.sleep(0.05)


@contextlib.contextmanager
def serve_receiver(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with state.lock:
                state.received.append(Received(time.monotonic(), self.path, body, dict(self.headers)))
                delays = state.delays.get(self.path, [])
                delay = delays.pop(0) if delays else 0.0
                answers = state.answers.get(self.path, [])
                status = answers.pop(0) if answers else 200
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the emulator gave up waiting (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state = Receiver(f"{scheme}://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Plain HTTP on loopback."""
    with serve_receiver() as state:
        yield state


def tls_context(ca: CertificateAuthority, name: str) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 issued by ``ca``."""
    pair = ca.issue(name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pair.cert), str(pair.key))
    return context
