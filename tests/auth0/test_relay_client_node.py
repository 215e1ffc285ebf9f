"""The relay client the Auth0 code carries, run in Node.js on its own: the idempotency key is the
contract's formula (same value as a Python implementation, which the relay side uses too), and
recipients are normalised to E.164 before signing."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from otp_operator.auth0 import render

VECTORS = [
    {"recipient": "+6591234567", "code": "123456", "message_type": "otp_verify",
     "text": "Your verification code is 123456"},
    {"recipient": "+14155550100", "message_type": "otp_enroll",
     "text": "Bienvenue ! Votre code : 000042 ✓"},
    {"recipient": "+442079460000", "code": "", "message_type": "otp_verify", "text": "x\ny"},
]


def contract_key(message: dict[str, str]) -> str:
    """Relay contract revision 2: sha256(recipient \\n code \\n message_type \\n text), hex."""
    parts = [message["recipient"], message.get("code") or "", message["message_type"],
             message["text"]]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def run_node(expression: str, argument: object) -> object:
    """Evaluate ``expression`` (a value or a promise) over ``arg`` with the rendered relay
    client's functions in scope."""
    script = render("phone-provider", "shop/prod") + (
        "\nconst arg = JSON.parse(process.argv[1]);\n"
        f"Promise.resolve({expression}).then((v) => process.stdout.write(JSON.stringify(v)));\n")
    done = subprocess.run(["node", "-e", script, json.dumps(argument)], capture_output=True,
                          text=True, timeout=30, check=True)
    return json.loads(done.stdout)


def test_idempotency_key_matches_the_python_formula():
    keys = run_node("arg.map(idempotencyKey)", VECTORS)
    assert keys == [contract_key(v) for v in VECTORS]
    assert all(len(k) == 64 and k == k.lower() for k in keys)  # type: ignore[union-attr]


def test_the_body_carries_the_key_of_exactly_what_it_sends():
    body = run_node("JSON.parse(relayBody(arg))", {**VECTORS[0], "locale": "en"})
    assert body["idempotency_key"] == contract_key(VECTORS[0])  # type: ignore[index]


@pytest.mark.parametrize(("given", "expected"), [
    ("+6591234567", "+6591234567"),
    ("1-808-555-5555", "+18085555555"),
    ("+1 (808) 555.5555", "+18085555555"),
    ("0065 9123 4567", "+6591234567"),
    ("6591234567", "+6591234567"),
    ("not a number", None),
    ("+0123456789", None),
    ("+12", None),
])
def test_recipients_are_normalised_to_e164(given, expected):
    assert run_node("normaliseRecipient(arg)", given) == expected


@pytest.fixture
def answering_server():
    """A loopback HTTP server answering every POST with the status in ``server.status``."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(self.server.status)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "retryable"), [
    (409, True), (429, True), (503, True),
    (502, False), (504, False), (400, False), (401, False), (403, False), (413, False),
    (422, False), (500, False),
])
def test_retry_only_when_the_relay_surely_sent_nothing(answering_server, status, retryable):
    answering_server.status = status
    url = f"http://127.0.0.1:{answering_server.server_address[1]}"
    outcome = run_node(
        "postToRelay({RELAY_URL: arg.url, RELAY_SIGNING_KEY: 'k'}, arg.message)",
        {"url": url, "message": VECTORS[0]})
    assert outcome == {"ok": False, "retryable": retryable,
                       "reason": f"otp-relay: relay answered HTTP {status}"}

