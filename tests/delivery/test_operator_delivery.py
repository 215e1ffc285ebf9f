"""Operator side of delivery receipts: the receipt-token Secret and its rotation, the relay's
receipt route in the Ingress, and the delivery summary in status (with its Event)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from otp_operator import delivery, names, receipt_tokens, render
from otp_operator.spec import SpecError, parse_channel
from tests.support.http import JsonHandler, loopback_server

OWNER = render.owner_reference("uid-1", "prod")
SPEC = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {"publicUrl": "https://otp.shop.example/prod", "ingress": {"host": "otp.shop.example"}},
    "policy": {"deliveryRatioThreshold": 0.9},
}


def secret_of(tokens: tuple[str, ...], rotation: str) -> dict[str, Any]:
    return render.receipt_token_secret(parse_channel("shop", "prod", SPEC), tokens, rotation, OWNER)


def tokens_in(secret: dict[str, Any]) -> list[str]:
    return base64.b64decode(secret["data"][names.RECEIPT_TOKEN_SECRET_KEY]).decode().splitlines()


def test_a_new_channel_gets_one_random_token() -> None:
    tokens, handled = receipt_tokens.plan(None, None)
    assert len(tokens) == 1 and len(tokens[0]) >= 40 and handled == ""
    assert receipt_tokens.plan(None, None)[0] != tokens


def test_the_token_is_kept_until_a_rotation_is_requested() -> None:
    secret = secret_of(("t1",), "")
    assert receipt_tokens.plan(secret, None) == (("t1",), "")
    assert receipt_tokens.plan(secret, "") == (("t1",), "")


def test_a_rotation_keeps_the_previous_token_for_receipts_in_flight_and_happens_once() -> None:
    rotated = receipt_tokens.plan(secret_of(("t1",), ""), "2026-12-01", generate=lambda: "t2")
    assert rotated == (("t1", "t2"), "2026-12-01")  # the newest last: the relay puts it on sends
    after = secret_of(*rotated)
    assert base64.b64decode(after["data"][names.RECEIPT_ROTATION_SECRET_KEY]) == b"2026-12-01"
    assert tokens_in(after) == ["t1", "t2"]
    assert receipt_tokens.plan(after, "2026-12-01", generate=lambda: "t3") == (("t1", "t2"), "2026-12-01")
    assert receipt_tokens.plan(after, "again", generate=lambda: "t3") == (("t2", "t3"), "again")


def test_the_relay_gets_the_receipt_url_and_the_token_file_and_the_ingress_routes_receipts() -> None:
    ch = parse_channel("shop", "prod", SPEC)
    children = render.render_children(ch, image="i", signing_keys=("k",), secrets_checksum="c", owner=OWNER,
                                      receipt_tokens=(("secret-token",), ""))
    secret = next(m for m in children.apply if m["metadata"]["name"] == "prod-relay-receipt-token")
    assert tokens_in(secret) == ["secret-token"]
    deployment = next(m for m in children.apply if m["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OTP_RELAY_RECEIPT_URL"] == "https://otp.shop.example/prod/v1/receipts"
    assert env["OTP_RELAY_RECEIPT_TOKEN_FILE"] == "/var/run/otp-relay/receipts/tokens"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["receipt-token"]["secret"]["secretName"] == "prod-relay-receipt-token"
    assert "secret-token" not in repr(deployment)
    ingress = next(m for m in children.apply if m["kind"] == "Ingress")
    paths = {p["path"]: p["pathType"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert paths == {"/prod/v1/messages": "Exact", "/prod/v1/receipts": "Prefix"}
    assert "secret-token" not in repr(ingress)


def test_the_threshold_is_validated() -> None:
    assert parse_channel("shop", "prod", SPEC).policy.delivery_ratio_threshold == 0.9
    with pytest.raises(SpecError, match="deliveryRatioThreshold"):
        parse_channel("shop", "prod", {**SPEC, "policy": {"deliveryRatioThreshold": 1.5}})


SUMMARY = {"windowSeconds": 900, "sent": 20, "delivered": 16, "undelivered": 4, "ratio": 0.8,
           "topFailureReason": "Absent subscriber"}


def test_the_status_is_written_only_when_the_numbers_change() -> None:
    new = delivery.delivery_status(SUMMARY, None, "2026-12-01T12:00:00Z")
    assert new == {**SUMMARY, "observedTime": "2026-12-01T12:00:00Z"}
    assert delivery.delivery_status(SUMMARY, new, "2026-12-01T12:01:00Z") is None
    assert delivery.delivery_status({**SUMMARY, "sent": 21}, new, "2026-12-01T12:01:00Z")["sent"] == 21


@pytest.mark.parametrize("previous, new, expected", [
    (None, SUMMARY, True),  # first reading below the threshold
    ({"ratio": 0.95}, SUMMARY, True),  # dropped below
    ({"ratio": 0.8}, {**SUMMARY, "ratio": 0.7}, False),  # still below: no second Event
    ({"ratio": 0.95}, {**SUMMARY, "ratio": 0.9}, False),  # at the threshold is fine
    ({"ratio": 0.95}, {**SUMMARY, "delivered": 1, "undelivered": 3, "ratio": 0.25}, False),  # too few
    ({"ratio": 0.95}, {**SUMMARY, "ratio": None}, False),
])
def test_an_event_when_the_ratio_drops_below_the_threshold(previous, new, expected) -> None:
    assert delivery.ratio_dropped(new, previous, 0.9) is expected
    assert delivery.ratio_dropped(new, previous, None) is False


def test_gauges_follow_the_channel_status() -> None:
    body_status = {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Auth0Synced", "status": "False"}],
                   "signingKey": {"phase": "KeyAdded", "since": 1000.0}, "delivery": {"ratio": 0.5}}
    assert delivery.channel_gauges(body_status, 1600.0) == {
        "ready": 1.0, "auth0_synced": 0.0, "rotation_seconds": 600.0, "delivery_ratio": 0.5}
    assert delivery.channel_gauges({}, 1600.0) == {"ready": 0.0, "auth0_synced": 0.0, "rotation_seconds": 0.0}


class Patch:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}


def test_the_timer_writes_the_summary_and_warns_once(monkeypatch, summary_server) -> None:
    """The timer against a real HTTP server answering like the relay's admin listener."""
    events: list[dict[str, str]] = []
    monkeypatch.setattr(delivery.kopf, "warn", lambda body, reason, message: events.append(
        {"reason": reason, "message": message}))
    monkeypatch.setattr(delivery, "summary_url", lambda namespace, name: summary_server)
    body = {"metadata": {"namespace": "shop", "name": "prod"}, "spec": SPEC, "status": {}}

    def tick() -> Patch:
        patch = Patch()
        asyncio.run(delivery.poll_delivery(namespace="shop", name="prod", spec=SPEC, body=body, patch=patch))
        return patch

    first = tick()
    assert {k: v for k, v in first.status["delivery"].items() if k != "observedTime"} == SUMMARY
    assert events == [{"reason": "DeliveryRatioLow", "message": "16 of 20 messages delivered in the last 15 "
                       "minutes (below 90%); most frequent failure: Absent subscriber"}]
    body["status"] = first.status
    assert tick().status == {}  # unchanged: no write, no second Event
    assert len(events) == 1
    assert delivery.metrics.CHANNEL_DELIVERY_RATIO.labels("shop", "prod")._value.get() == 0.8


@pytest.fixture
def summary_server():
    """A loopback HTTP server answering /v1/delivery-summary with ``SUMMARY`` (in a thread)."""

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.answer(200 if self.path == names.RELAY_DELIVERY_SUMMARY_PATH else 404, SUMMARY)

    with loopback_server(Handler) as server:
        yield f"http://127.0.0.1:{server.server_port}{names.RELAY_DELIVERY_SUMMARY_PATH}"
