"""What the registered code adds for conversion tracking, run by the Auth0 emulator's own Node
runner (``runner.js``) with the events Auth0 hands each integration, against a loopback relay
stand-in: ``subject`` is the contract's keyed digest of the user id (computed here in Python),
absent without a user, and a conversion block is a drop with a reason, never a retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from otp_operator.auth0 import render
from otp_sandbox.auth0_emulator.events import PhoneMessage, action_event, hook_args
from otp_sandbox.auth0_emulator.runner import RUNNER_JS
from tests.support.http import JsonHandler, loopback_server

SIGNING_KEY = "signing-key-0001-abcdef"
USER_ID = "auth0|sandbox-user-1"  # what the emulator's events carry
MESSAGE = PhoneMessage(recipient="+6591234567", text="Your code is 482913", code="482913")
TRIGGERS = {"phone-provider": "custom-phone-provider", "send-phone-message": "send-phone-message",
            "legacy-hook": "hook"}
BLOCKED = {"type": "https://otp-relay.invalid/problems/conversion-blocked", "title": "Conversion blocked",
           "status": 403, "detail": "number prefix +6591 paused", "request_id": "r1"}


class Relay(ThreadingHTTPServer):
    status = 202
    answer: dict[str, Any] = {"id": "umid-1", "status": "queued"}
    bodies: list[dict[str, Any]]


@pytest.fixture
def relay() -> Iterator[Relay]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:  # noqa: N802
            server: Relay = self.server  # type: ignore[assignment]
            server.bodies.append(json.loads(self.body()))
            self.answer(server.status, server.answer,
                        "application/json" if server.status < 400 else "application/problem+json")

    with loopback_server(Handler, Relay) as server:
        server.bodies = []
        yield server


def run(mode: str, relay: Relay, *, user: bool = True) -> dict[str, Any]:
    """Run the registered code for ``mode`` once, the way the emulator runs it for Auth0."""
    secrets = {"RELAY_URL": f"http://127.0.0.1:{relay.server_address[1]}", "RELAY_SIGNING_KEY": SIGNING_KEY}
    trigger = TRIGGERS[mode]
    job: dict[str, Any] = {"kind": "hook" if mode == "legacy-hook" else "action", "trigger": trigger,
                           "code": render(mode, "shop/prod"), "timeout_ms": 20000}
    if mode == "legacy-hook":
        job["hook_args"] = hook_args("shop", MESSAGE, secrets)
        if not user:
            del job["hook_args"]["context"]["user"]
    else:
        job["event"] = action_event(trigger, "shop", MESSAGE, secrets)
        if not user:
            del job["event"]["user"]
    done = subprocess.run(["node", str(RUNNER_JS)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=30, check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("@@otp-sandbox-result "))
    return json.loads(line.split(" ", 1)[1])


@pytest.mark.parametrize("mode", list(TRIGGERS))
def test_the_subject_is_the_keyed_digest_of_the_user_id(mode, relay):
    assert run(mode, relay)["outcome"] == "success"
    [body] = relay.bodies
    assert body["subject"] == hmac.new(SIGNING_KEY.encode(), USER_ID.encode(), hashlib.sha256).hexdigest()
    assert USER_ID not in json.dumps(body)


@pytest.mark.parametrize("mode", list(TRIGGERS))
def test_no_subject_without_a_user(mode, relay):
    assert run(mode, relay, user=False)["outcome"] == "success"
    [body] = relay.bodies
    assert "subject" not in body


@pytest.mark.parametrize(("mode", "outcome"), [
    ("phone-provider", "drop"), ("send-phone-message", "error"), ("legacy-hook", "error")])
def test_a_conversion_block_is_final_with_its_reason(mode, outcome, relay):
    relay.status, relay.answer = 403, BLOCKED
    result = run(mode, relay)
    assert result["outcome"] == outcome  # drop (or the MFA triggers' error), never retry
    assert "paused for unused codes" in result["reason"]
    assert "+6591" not in result["reason"] and "482913" not in result["reason"]
    assert len(relay.bodies) == 1


def test_another_403_keeps_its_plain_reason(relay):
    relay.status, relay.answer = 403, {"type": "about:blank", "title": "Forbidden", "status": 403,
                                       "detail": "SMS to country MY is not allowed"}
    result = run("phone-provider", relay)
    assert result == {**result, "outcome": "drop", "reason": "otp-relay: relay answered HTTP 403"}
