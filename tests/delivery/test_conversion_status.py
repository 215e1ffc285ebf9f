"""Operator side of conversion (issue 26): the relay summary's ``conversion`` in
``status.delivery.conversion`` and its gauge, and lifting a block with the
``otprelay.io/lift-conversion-block`` annotation (one signed request per key, each value once)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from http.server import ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from otp_operator import conversion_lift, delivery, names
from otp_relay import signing
from tests.support.http import JsonHandler, loopback_server

SIGNING_KEY = "conversion-signing-key-0001"
SPEC = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {"publicUrl": "https://otp.shop.example/prod", "ingress": {"host": "otp.shop.example"}, "replicas": 1},
    "conversion": {"blocking": {"mode": "enforce"}},
}
COUNTRIES = {"GB": (100, 0.9), "SG": (40, 0.85), "ID": (30, 0.1), "NG": (25, 0.2), "US": (60, 0.95),
             "FR": (12, 0.5), "DE": (8, 0.75)}
CONVERSION = {
    "enabled": True, "sent": 300, "success": 200, "failure": 60, "pending": 40, "rate": 0.769231,
    "countries": {c: {"sent": sent, "success": 0, "failure": 0, "rate": rate} for c, (sent, rate) in COUNTRIES.items()}
    | {"KE": {"sent": 3, "success": 0, "failure": 0, "rate": None}},
    "feedback": {"posted": 250, "failed": 2, "pending": 8},
    "log_stream": {"events": 260, "last_event": "2026-12-07T22:58:01.123456+00:00", "tokens": ["0a1b2c3d"]},
    "rule": {"mode": "enforce",
             "prefixes": [{"key": "+6281", "sent": 30, "converted": 3, "rate": 0.1},
                          {"key": "+4477", "sent": 90, "converted": 81, "rate": 0.9},
                          {"key": "not a prefix", "sent": 1, "converted": 0, "rate": 0.0}],
             "blocks": [{"key": "+6281", "kind": "prefix", "until": "2026-12-07T23:58:00Z", "enforced": True, "level": 1},
                        {"key": "+62 81", "kind": "prefix", "until": "2026-12-07T23:58:00Z", "enforced": True}]},
}


def test_the_summary_becomes_the_status_with_the_worst_countries_and_prefixes() -> None:
    record = delivery.conversion_record(CONVERSION)
    assert record == {
        "sent": 300, "success": 200, "failure": 60, "pending": 40, "rate": 0.7692,
        "worstCountries": [{"country": "ID", "sent": 30, "rate": 0.1}, {"country": "NG", "sent": 25, "rate": 0.2},
                           {"country": "FR", "sent": 12, "rate": 0.5}, {"country": "DE", "sent": 8, "rate": 0.75},
                           {"country": "SG", "sent": 40, "rate": 0.85}],
        "mode": "enforce",
        "worstPrefixes": [{"prefix": "+6281", "sent": 30, "converted": 3, "rate": 0.1},
                          {"prefix": "+4477", "sent": 90, "converted": 81, "rate": 0.9}],
        "blocks": [{"key": "+6281", "kind": "prefix", "until": "2026-12-07T23:58:00Z", "enforced": True, "level": 1}],
        "feedback": {"posted": 250, "failed": 2},
        "lastLogEvent": "2026-12-07T22:58:01Z",
    }
    assert "0a1b2c3d" not in json.dumps(record)  # token digests stay in the relay's summary


@pytest.mark.parametrize("value", [None, {"enabled": False, "sent": 3}, "on", [CONVERSION]])
def test_no_conversion_in_the_summary_means_none_in_status(value) -> None:
    assert delivery.conversion_record(value) is None


def test_a_change_in_conversion_alone_is_written() -> None:
    summary = {"sent": 20, "ratio": 0.8, "conversion": delivery.conversion_record(CONVERSION)}
    first = delivery.delivery_status(summary, None, "2026-12-07T23:00:00Z")
    assert delivery.delivery_status(summary, first, "2026-12-07T23:01:00Z") is None
    more = {**summary, "conversion": {**summary["conversion"], "pending": 41}}
    assert delivery.delivery_status(more, first, "2026-12-07T23:01:00Z")["conversion"]["pending"] == 41


def gauge(namespace: str, name: str) -> float | None:
    return delivery.metrics.REGISTRY.get_sample_value("otp_operator_channel_conversion_ratio",
                                                      {"namespace": namespace, "channel": name})


def test_the_conversion_gauge_follows_the_status_and_goes_with_the_channel() -> None:
    with_rate = {"delivery": {"conversion": {"rate": 0.42}}}
    delivery._set_gauges("shop", "gauge", delivery.channel_gauges(with_rate, 0.0))
    assert gauge("shop", "gauge") == 0.42
    delivery._set_gauges("shop", "gauge", delivery.channel_gauges({"delivery": {"conversion": {}}}, 0.0))
    assert gauge("shop", "gauge") is None  # no outcome yet: no value, not a zero
    delivery._set_gauges("shop", "gauge", delivery.channel_gauges(with_rate, 0.0))
    asyncio.run(delivery.channel_gone(type="DELETED", namespace="shop", name="gauge"))
    assert gauge("shop", "gauge") is None


@pytest.mark.parametrize(("annotation", "keys", "problem"), [
    ("+6281", ("+6281",), None),
    (" gb, +4477 ,GB,, ", ("GB", "+4477"), None),
    ("+6281,6281", (), "'6281'"),
    ("+0123", (), "'+0123'"),
    ("United Kingdom", (), "'United Kingdom'"),
    (",".join(f"+44{i}" for i in range(21)), (), "at most 20 keys"),
])
def test_the_annotation_is_read_into_keys_or_refused_whole(annotation, keys, problem) -> None:
    lift = conversion_lift.pending(annotation, None)
    assert lift is not None and lift.keys == keys
    assert (lift.problem is None) if problem is None else (problem in (lift.problem or ""))


def test_a_processed_value_is_not_processed_again() -> None:
    assert conversion_lift.pending("+6281", {"annotation": "+6281"}) is None
    assert conversion_lift.pending("+6281,GB", {"annotation": "+6281"}) is not None
    assert conversion_lift.pending("", None) is None and conversion_lift.pending(None, None) is None


class Relay(ThreadingHTTPServer):
    """The relay's admin summary and public lift route on one loopback server."""
    lifts: list[tuple[str, dict[str, str], bytes]]
    blocked: set[str]
    lift_status = 200


@pytest.fixture
def relay():
    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.answer(200, {"sent": 10, "conversion": CONVERSION})

        def do_POST(self) -> None:  # noqa: N802
            server: Relay = self.server  # type: ignore[assignment]
            body = self.body()
            server.lifts.append((self.path, dict(self.headers), body))
            key = json.loads(body)["key"]
            self.answer(server.lift_status, {"lifted": key in server.blocked})
            server.blocked.discard(key)

    with loopback_server(Handler, Relay) as server:
        server.lifts, server.blocked = [], {"+6281"}
        yield server


class Channel:
    def __init__(self, relay: Relay, monkeypatch, spec: dict[str, Any] = SPEC) -> None:
        base = f"http://127.0.0.1:{relay.server_port}"
        self.spec = spec
        self.body: dict[str, Any] = {"metadata": {"namespace": "shop", "name": "prod", "annotations": {}},
                                     "spec": spec, "status": {}}
        self.events: list[tuple[str, str]] = []
        secret = {"data": {names.SIGNING_KEY_SECRET_KEY: base64.b64encode(f"{SIGNING_KEY}\nnewer\n".encode()).decode()}}

        async def read(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
            assert (kind, namespace, name) == ("Secret", "shop", names.signing_key_secret_name("prod"))
            return secret

        self.runtime = SimpleNamespace(read=read)
        monkeypatch.setattr(delivery, "summary_url", lambda namespace, name: base + names.RELAY_DELIVERY_SUMMARY_PATH)
        monkeypatch.setattr(delivery, "relay_lift_url", lambda ch: base + ch.relay.path_prefix + names.RELAY_CONVERSION_LIFT_PATH)
        for level in ("warn", "info"):
            monkeypatch.setattr(delivery.kopf, level, lambda body, reason, message: self.events.append((reason, message)))

    def tick(self) -> dict[str, Any]:
        patch = SimpleNamespace(status={})
        asyncio.run(delivery.poll_delivery(namespace="shop", name="prod", spec=self.spec, body=self.body, patch=patch,
                                           memo=SimpleNamespace(runtime=self.runtime)))
        self.body["status"].update(patch.status)
        return patch.status

    def lift_events(self) -> list[tuple[str, str]]:
        """The Events of lifting (a block that starts has its own, ``ConversionBlocked``)."""
        return [event for event in self.events if event[0] not in ("ConversionBlocked", "ConversionBlockMonitored")]

    def annotate(self, value: str) -> None:
        self.body["metadata"]["annotations"][names.ANNOTATION_LIFT_CONVERSION_BLOCK] = value


def test_the_timer_writes_conversion_and_sets_the_gauge(relay, monkeypatch) -> None:
    written = Channel(relay, monkeypatch).tick()
    assert written["delivery"]["conversion"] == delivery.conversion_record(CONVERSION)
    assert gauge("shop", "prod") == 0.7692
    assert relay.lifts == []  # no annotation: nothing lifted


def test_a_block_that_starts_gets_one_event_and_a_repeat_another(relay, monkeypatch) -> None:
    channel = Channel(relay, monkeypatch)
    channel.tick()
    [(reason, message)] = [(r, m) for r, m in channel.events if r.startswith("ConversionBlock")]
    assert reason == "ConversionBlocked" and "+6281" in message and names.ANNOTATION_LIFT_CONVERSION_BLOCK in message
    channel.events.clear()
    channel.tick()  # the same summary: no new block, no Event
    assert channel.events == []
    before = {"blocks": [{"key": "+6281", "kind": "prefix", "until": "2026-12-07T23:58:00Z", "enforced": True}]}
    again = {"blocks": [{"key": "+6281", "kind": "prefix", "until": "2026-12-08T01:58:00Z", "enforced": True,
                         "level": 2},
                        {"key": "ID", "kind": "country", "until": "2026-12-08T00:58:00Z", "enforced": False}]}
    started = delivery.started_blocks(before, again)
    assert [b["key"] for b in started] == ["+6281", "ID"]
    events = [delivery.block_event(b) for b in started]
    assert [(warning, reason) for warning, reason, _ in events] == [
        (True, "ConversionBlocked"), (False, "ConversionBlockMonitored")]
    assert "block 2" in events[0][2] and "nothing is refused" in events[1][2]
    assert delivery.started_blocks(again, again) == []


def test_each_key_is_lifted_once_by_a_signed_request(relay, monkeypatch) -> None:
    channel = Channel(relay, monkeypatch)
    channel.annotate("+6281, GB")
    lift = channel.tick()["conversionLift"]
    assert [(path, json.loads(body)) for path, _, body in relay.lifts] == [
        ("/prod/v1/conversion/lift", {"key": "+6281"}), ("/prod/v1/conversion/lift", {"key": "GB"})]
    for _, headers, body in relay.lifts:
        assert signing.verify(signing.prime([SIGNING_KEY]), headers["X-Otp-Timestamp"], headers["X-Otp-Signature"],
                              body, time.time()) not in set(signing.Failure)
    assert lift["annotation"] == "+6281, GB" and lift["message"] == "processed"
    assert lift["results"] == [{"key": "+6281", "outcome": "lifted"}, {"key": "GB", "outcome": "not-blocked"}]
    assert [reason for reason, _ in channel.lift_events()] == ["ConversionBlockLifted", "ConversionBlockNotFound"]
    channel.events.clear()
    assert "conversionLift" not in channel.tick()  # the annotation stays (GitOps): not lifted again
    assert len(relay.lifts) == 2 and channel.events == []
    channel.annotate("+6281")
    channel.tick()
    assert len(relay.lifts) == 3  # a new value is a new request


def test_invalid_keys_send_nothing_and_say_why(relay, monkeypatch) -> None:
    channel = Channel(relay, monkeypatch)
    channel.annotate("+6281,44 77")
    lift = channel.tick()["conversionLift"]
    assert relay.lifts == []
    assert "'44 77'" in lift["message"] and lift["results"] == []
    assert channel.lift_events() == [("ConversionLiftInvalid", lift["message"])]


def test_a_refused_lift_is_reported_failed(relay, monkeypatch) -> None:
    relay.lift_status = 401
    channel = Channel(relay, monkeypatch)
    channel.annotate("+6281")
    lift = channel.tick()["conversionLift"]
    assert lift["results"] == [{"key": "+6281", "outcome": "failed", "detail": "relay answered HTTP 401"}]
    assert "set the annotation again" in lift["message"]
    assert channel.lift_events()[0][0] == "ConversionBlockLiftFailed"


def test_without_spec_conversion_nothing_is_sent(relay, monkeypatch) -> None:
    channel = Channel(relay, monkeypatch, {k: v for k, v in SPEC.items() if k != "conversion"})
    channel.annotate("+6281")
    assert "spec.conversion is not set" in channel.tick()["conversionLift"]["message"]
    assert relay.lifts == []
