"""Conversion feedback: ``track`` on a send and ``POST .../messages/{umid}/feedback`` as 8x8's
OpenAPI file and feedback tutorial document them, and the emulator's stricter choices where
they are silent (``otp_sandbox.eightbyeight.feedback``). Every answer is checked against the
schemas (conftest)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from .conftest import SUB

NUMBER = "+6591234567"
OTHER_SUB, OTHER_KEY = "emu_other", "emu-key-2"


def _send(client, **fields) -> str:
    response = client.send({"destination": NUMBER, "text": "Your code is 123456", **fields})
    assert response.status_code == 200, response.text
    return response.json()["umid"]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_feedback_on_a_tracked_message_is_recorded(emu, client) -> None:
    umid = _send(client, track="Outcome", clientMessageId="otp-1")
    [message] = emu.messages()
    assert (message.track, message.tracked) == ("Outcome", True) and message.accepted_at
    stamp = _now()
    response = client.feedback(umid, {"outcome": "success", "timestamp": stamp})
    assert response.status_code == 200 and response.content == b""
    [given] = emu.feedback()
    assert (given.umid, given.subaccount, given.outcome, given.timestamp) == (umid, SUB, "success", stamp)
    assert (given.destination, given.client_message_id) == ("6591234567", "otp-1")
    assert 0 <= given.after_seconds < 60


def test_failure_without_a_timestamp(emu, client) -> None:
    umid = _send(client, track="Outcome")
    assert client.feedback(umid, {"outcome": "failure"}).status_code == 200
    assert [(f.outcome, f.timestamp) for f in emu.feedback()] == [("failure", None)]


@pytest.mark.parametrize("track", ["outcome", "OUTCOME", "Yes", ""])
def test_track_takes_only_the_documented_values(emu, client, track) -> None:
    response = client.send({"destination": NUMBER, "text": "hi", "track": track})
    assert (response.status_code, response.json()["code"]) == (400, 1000)
    assert emu.messages() == []


def test_track_is_not_a_template_field(emu, client) -> None:
    response = client.send({"messages": [{"destination": NUMBER}], "template": {"text": "hi", "track": "Outcome"}},
                           batch=True)
    assert (response.status_code, response.json()["code"]) == (400, 1007)


def test_track_per_batch_message(emu, client) -> None:
    response = client.send({"messages": [{"destination": NUMBER, "track": "Outcome"},
                                         {"destination": "+6598765432"}], "template": {"text": "hi"}},
                           batch=True)
    assert response.status_code == 200
    assert [(m.destination, m.tracked) for m in emu.messages()] == [("6591234567", True), ("6598765432", False)]


@pytest.mark.parametrize("track", [None, "None"])
def test_an_untracked_message_takes_no_feedback(emu, client, track) -> None:
    umid = _send(client, **({} if track is None else {"track": track}))
    response = client.feedback(umid, {"outcome": "success"})
    assert (response.status_code, response.json()["code"]) == (400, 1000)
    assert "track" in response.json()["message"] and emu.feedback() == []


def test_subaccount_tracking_covers_sends_without_track(emu, client) -> None:
    emu.set_tracking(SUB)
    tracked, opted_out = _send(client), _send(client, track="None")
    assert client.feedback(tracked, {"outcome": "success"}).status_code == 200
    assert client.feedback(opted_out, {"outcome": "success"}).status_code == 400


def test_the_15_minute_window(emu, client) -> None:
    late, in_time = _send(client, track="Outcome"), None
    emu.advance_clock(14 * 60)
    in_time = _send(client, track="Outcome")
    emu.advance_clock(61 + 60)  # the first message is now 16 minutes old, the second 2
    response = client.feedback(late, {"outcome": "success"})
    assert (response.status_code, response.json()["code"]) == (400, 1000)
    assert "15 minutes" in response.json()["message"]
    assert client.feedback(in_time, {"outcome": "success"}).status_code == 200
    assert [f.umid for f in emu.feedback()] == [in_time]


def test_a_second_feedback_is_refused(emu, client) -> None:
    umid = _send(client, track="Outcome")
    assert client.feedback(umid, {"outcome": "failure"}).status_code == 200
    response = client.feedback(umid, {"outcome": "success"})
    assert (response.status_code, response.json()["code"]) == (400, 1000)
    assert [f.outcome for f in emu.feedback()] == ["failure"]


def test_unknown_and_malformed_umids(emu, client) -> None:
    _send(client, track="Outcome")
    unknown = client.feedback(str(uuid.uuid4()), {"outcome": "success"})
    assert (unknown.status_code, unknown.json()["code"], unknown.json()["message"]) == (404, 1300, "Message not found.")
    malformed = client.feedback("not-a-umid", {"outcome": "success"})
    assert (malformed.status_code, malformed.json()["code"], malformed.json()["message"]) == (400, 1000, "Invalid umid.")


def test_another_subaccounts_message_is_not_found(emu, client) -> None:
    emu.add_subaccount(OTHER_SUB, OTHER_KEY)
    umid = _send(client, track="Outcome")
    response = client.feedback(umid, {"outcome": "success"}, sub=OTHER_SUB, key=OTHER_KEY)
    assert (response.status_code, response.json()["code"]) == (404, 1300)
    # the key of another subaccount on ours: 8x8's 1001, as for a send
    response = client.feedback(umid, {"outcome": "success"}, key=OTHER_KEY)
    assert (response.status_code, response.json()["code"]) == (400, 1001)


def test_authentication(emu, client) -> None:
    umid = _send(client, track="Outcome")
    for key in (None, "wrong"):
        response = client.feedback(umid, {"outcome": "success"}, key=key)
        assert (response.status_code, response.json()["code"]) == (401, 1200)
    assert emu.feedback() == []


@pytest.mark.parametrize("body", [
    {}, {"outcome": "Success"}, {"outcome": "converted"}, {"outcome": None}, {"outcome": True},
    {"outcome": "success", "timestamp": "yesterday"},
    {"outcome": "success", "timestamp": "2026-01-01T10:00:00"},  # no offset
    {"outcome": "success", "timestamp": "2000-01-01T00:00:00Z"},  # before the message
    {"outcome": "success", "timestamp": "2999-01-01T00:00:00Z"},  # in the future
    {"outcome": "success", "extra": 1},
    ["success"],
], ids=["empty", "capitalised", "unknown", "null", "boolean", "bad-timestamp", "no-offset",
        "before-send", "future", "unknown-field", "array"])
def test_body_validation(emu, client, body) -> None:
    umid = _send(client, track="Outcome")
    response = client.feedback(umid, body)
    assert (response.status_code, response.json()["code"]) == (400, 1000)
    assert emu.feedback() == []


def test_body_must_be_json(emu, client) -> None:
    umid = _send(client, track="Outcome")
    assert client.feedback(umid, None, content=b"outcome=success",
                           content_type="application/x-www-form-urlencoded").status_code == 400
    assert client.feedback(umid, None, content=b"{", content_type="application/json").status_code == 400


def test_a_rejected_message_takes_no_feedback(emu, client) -> None:
    emu.reject_destination(NUMBER)
    umid = _send(client, track="Outcome")
    response = client.feedback(umid, {"outcome": "failure"})
    assert (response.status_code, response.json()["code"]) == (400, 1000)


def test_faults_apply_to_feedback(emu, client) -> None:
    umid = _send(client, track="Outcome")
    emu.inject("status", status=503, api="sms")
    assert client.feedback(umid, {"outcome": "success"}).status_code == 503
    assert client.feedback(umid, {"outcome": "success"}).status_code == 200
    assert [r["status"] for r in emu.requests() if r["path"].endswith("/feedback")] == [503, 200]


def test_clear_forgets_feedback_tracking_and_the_clock(emu, client) -> None:
    emu.set_tracking(SUB)
    emu.advance_clock(3600)
    assert client.feedback(_send(client), {"outcome": "success"}).status_code == 200
    emu.clear()
    assert emu.feedback() == []
    umid = _send(client)
    assert emu.messages()[0].tracked is False
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    assert dt.datetime.fromisoformat(emu.messages()[0].accepted_at) < before + dt.timedelta(minutes=1)
    assert client.feedback(umid, {"outcome": "success"}).status_code == 400
