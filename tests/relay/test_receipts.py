"""8x8 delivery receipts through a real relay: the emulator posts them to the send's
``dlrCallbackUrl``; wrong tokens look like unknown paths; repeats count once; metrics, the
delivery summary and the log never show a full number."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from otp_operator import delivery
from otp_relay import receipts
from otp_relay.keys import WatchedFile, parse_signing_keys
from tests.fixtures.redis import RedisServer
from tests.fixtures.relay import RelayProcess, kubelet_volume, otp_body

from .conftest import (
    API_KEY, SIGNING_KEYS, SUBACCOUNT, TOKENS, assert_no_secrets, fresh_number,
    post_receipt, samples, wait_for,
)

KEY = SIGNING_KEYS[1]
TEXT = (("channel", "text"),)
NO_FIGURES = {"sent": 0, "delivered": 0, "undelivered": 0, "ratio": None, "topFailureReason": ""}


def receipt_body(umid: str, state: str = "delivered", destination: str = "+6591234567", **status) -> dict:
    return {"namespace": "SMS", "eventType": "outbound_message_status_changed",
            "payload": {"umid": umid, "subAccountId": SUBACCOUNT, "destination": destination,
                        "status": {"state": state, "timestamp": "2026-12-01T10:00:00.00Z", **status}}}


def test_a_delivered_receipt_from_8x8_is_timed_and_summarised(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    number = fresh_number()
    emulator.set_outcome(number, "delivered", after_ms=2000)
    started = time.monotonic()
    umid = relay.post(otp_body(number), KEY).json()["id"]
    send_took = time.monotonic() - started
    # The lower bound below must mean something: 8x8's 2 s, less at most the whole send.
    assert send_took < 1.5, f"the send took {send_took:.2f} s: too loaded to time a 2 s delivery"
    [sent] = emulator.messages()
    assert sent.dlr_callback_url == f"{relay.url}/v1/receipts/{TOKENS[1]}"  # the newest token
    wait_for(lambda: samples(relay, "otp_relay_delivery_seconds_count") == {TEXT: 1.0})
    [attempt] = emulator.receipts()["attempts"]
    assert (attempt["umid"], attempt["attempt"], attempt["result"]) == (umid, 1, 200)
    assert samples(relay, "otp_relay_receipts_total") == {
        (("channel", "text"), ("country", "SG"), ("detail", "delivered_to_recipient"), ("error_code", ""),
         ("state", "delivered")): 1.0}
    # The relay learns of the acceptance when 8x8's answer arrives, up to one send after it.
    assert 2.0 - send_took <= samples(relay, "otp_relay_delivery_seconds_sum")[TEXT] < 10
    figures = {"sent": 1, "delivered": 1, "undelivered": 0, "ratio": 1.0, "topFailureReason": ""}
    assert relay.get("/v1/delivery-summary").json() == {
        "windowSeconds": 900, **figures, "channels": {"text": figures, "voice": NO_FIGURES}}
    assert samples(relay, "otp_relay_delivery_ratio") == {(): 1.0}
    logs = relay.logs()
    assert "***" + number[-4:] in logs
    assert_no_secrets(logs, [number, *TOKENS, API_KEY])


def test_undelivered_receipts_carry_the_error_code_and_lower_the_ratio(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    good, bad = fresh_number(), "+60123456789"
    emulator.set_outcome(bad, "undelivered", error_code=1)
    for number in (good, good, bad):
        assert relay.post(otp_body(number, code=str(time.monotonic_ns())[-6:]), KEY).status_code == 202
    wait_for(lambda: sum(samples(relay, "otp_relay_receipts_total").values()) == 3)
    counted = samples(relay, "otp_relay_receipts_total")
    assert counted[(("channel", "text"), ("country", "MY"), ("detail", "rejected_by_operator"), ("error_code", "1"),
                    ("state", "undelivered"))] == 1.0
    summary = relay.get("/v1/delivery-summary").json()
    assert (summary["sent"], summary["delivered"], summary["undelivered"]) == (3, 2, 1)
    assert summary["ratio"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["topFailureReason"] == "Absent subscriber"
    # what the operator reads into status.delivery
    read = asyncio.run(delivery.fetch_summary(relay.admin_url + "/v1/delivery-summary"))
    # the operator's fields: the totals, and per channel the same figures without the window
    # (a figure the relay has no value for, such as a ratio without receipts, is left out)
    assert read == {**{k: v for k, v in summary.items() if k != "channels"},
                    "channels": {channel: {k: v for k, v in figures.items() if k != "windowSeconds"
                                           and v not in (None, "")}
                                 for channel, figures in summary["channels"].items()}}


def test_a_wrong_token_gets_the_same_404_as_an_unknown_path(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    body = receipt_body("0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f")
    unknown_path = relay.client.post(f"{relay.url}/v1/nothing-here", json=body)
    for token in ("rcpt-new-9fJw3Hs6Ye4RbN1", TOKENS[1] + "x", "", "..%2F" + TOKENS[1]):
        answer = post_receipt(relay, body, token)
        assert answer.status_code == 404
        assert (answer.text, answer.headers["content-type"]) == (
            unknown_path.text, unknown_path.headers["content-type"])
    assert samples(relay, "otp_relay_receipts_total") == {}
    assert_no_secrets(relay.logs(), TOKENS)


def sent_umid(relay: RelayProcess, emulator, number: str | None = None) -> str:
    """The umid of a message the relay sent (8x8's emulator sends no receipt for it)."""
    number = number or fresh_number()
    emulator.set_outcome(number, "none")
    return relay.post(otp_body(number, code=str(time.monotonic_ns())[-6:]), KEY).json()["id"]


def test_both_the_previous_and_the_current_token_are_accepted(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    for token in TOKENS:
        assert post_receipt(relay, receipt_body(sent_umid(relay, emulator)), token).status_code == 200
    assert sum(samples(relay, "otp_relay_receipts_total").values()) == 2


def test_a_rotated_token_file_is_used_without_a_restart(receipt_relay, emulator) -> None:
    relay = receipt_relay(tokens=(TOKENS[0],))
    directory = Path(relay.log_path).parent / "receipts"
    kubelet_volume(directory, {"tokens": f"{TOKENS[0]}\n{TOKENS[1]}\n"})
    wait_for(lambda: post_receipt(relay, receipt_body("bb1"), TOKENS[1]).status_code != 404)  # 503: unknown umid
    relay.post(otp_body(fresh_number()), KEY)
    assert emulator.messages()[-1].dlr_callback_url.endswith("/" + TOKENS[1])


def test_a_repeated_receipt_is_counted_once(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    umid = sent_umid(relay, emulator)
    body = receipt_body(umid, "undelivered", errorCode=1, errorMessage="Absent subscriber")
    assert [post_receipt(relay, body).status_code for _ in range(3)] == [200, 200, 200]
    assert list(samples(relay, "otp_relay_receipts_total").values()) == [1.0]
    assert samples(relay, "otp_relay_receipt_requests_total")[(("result", "duplicate"),)] == 2.0
    assert relay.get("/v1/delivery-summary").json()["undelivered"] == 1
    assert samples(relay, "otp_relay_delivery_ratio") == {(): 0.0}  # none delivered is 0, not "no data"
    # a new state of the same message is a new receipt
    assert post_receipt(relay, receipt_body(umid, "read")).status_code == 200
    assert sum(samples(relay, "otp_relay_receipts_total").values()) == 2.0


def test_forged_receipts_neither_grow_the_metrics_nor_fake_health(receipt_relay, emulator) -> None:
    """With the token, 3,000 receipts for umids the relay never sent (random error codes and
    destinations, "delivered" ones among them): answered 503, counted by result only; the
    receipt series, the delivery ratio, the summary and its failure reason stay the relay's own."""
    relay = receipt_relay()
    number = fresh_number()
    emulator.set_outcome(number, "undelivered", error_code=1)
    assert relay.post(otp_body(number), KEY).status_code == 202
    wait_for(lambda: relay.get("/v1/delivery-summary").json()["undelivered"] == 1)
    before = relay.get("/v1/delivery-summary").json()
    with httpx.Client(timeout=10) as client:
        for i in range(3000):
            state = "delivered" if i % 2 else "undelivered"
            body = receipt_body(str(uuid.UUID(int=i)), state, destination=f"+{1 + i % 9}{i:010d}",
                                errorCode=i % 1000, errorMessage=f"attacker text {i}")
            assert client.post(f"{relay.url}/v1/receipts/{TOKENS[1]}", json=body).status_code == 503
    counted = samples(relay, "otp_relay_receipts_total")
    assert len(counted) <= 1 and sum(counted.values()) == 1  # the real receipt only
    assert relay.get("/v1/delivery-summary").json() == before
    assert before["ratio"] == 0.0 and before["topFailureReason"] == "Absent subscriber"
    assert samples(relay, "otp_relay_delivery_ratio") == {(): 0.0}
    # (and any retried receipt of an earlier test's relay that had this port)
    assert samples(relay, "otp_relay_receipt_requests_total")[(("result", "unknown_umid"),)] >= 3000
    series = sum(1 for line in relay.get("/metrics").text.splitlines() if line.startswith("otp_relay_receipt"))
    assert series <= 20
    relay.stop()
    receipt_lines = [r for r in relay.log_records() if r.get("msg") == "receipt"]
    assert len(receipt_lines) < 300  # the log budget, not one line per forged receipt
    assert "attacker text" not in relay.logs()


@pytest.mark.parametrize("body, status", [
    (b"x" * (receipts.MAX_RECEIPT + 1), 413),
    (b"{not json", 400),
    (b'{"eventType": "outbound_message_status_changed", "payload": {"umid": "x y"}}', 400),
])
def test_bad_bodies_are_refused_and_not_counted(receipt_relay, emulator, body: bytes, status: int) -> None:
    relay = receipt_relay()
    assert post_receipt(relay, body).status_code == status
    assert samples(relay, "otp_relay_receipts_total") == {}


def test_a_chunked_body_without_length_is_bounded_too(receipt_relay, emulator) -> None:
    relay = receipt_relay()
    answer = relay.client.post(f"{relay.url}/v1/receipts/{TOKENS[1]}", content=iter([b"x" * 4096] * 5))
    assert answer.status_code == 413
    # refused by the handler's read, or by the connection guard when it all came at once
    assert (samples(relay, "otp_relay_receipt_requests_total").get((("result", "too_large"),))
            or relay.metric("otp_relay_connections_dropped_total", reason="body_too_large")) == 1.0


def test_replicas_on_redis_share_submit_times_and_repeats(receipt_relay, emulator,
                                                           redis_server: RedisServer) -> None:
    prefix = f"test:receipts:{time.monotonic_ns()}"
    shared = {"STATE_URL": redis_server.url, "STATE_PASSWORD_FILE": str(redis_server.password_file),
              "STATE_PREFIX": prefix}
    one, two = receipt_relay(**shared), receipt_relay(**shared)
    number = fresh_number()
    emulator.set_outcome(number, "none")
    umid = one.post(otp_body(number), KEY).json()["id"]
    body = receipt_body(umid, destination=number)
    time.sleep(0.3)
    assert post_receipt(two, body).status_code == 200  # 8x8 reached the other replica
    assert post_receipt(one, body).status_code == 200  # and retried on the first one
    assert samples(two, "otp_relay_delivery_seconds_count") == {TEXT: 1.0}
    assert samples(two, "otp_relay_delivery_seconds_sum")[TEXT] >= 0.3
    assert sum(samples(one, "otp_relay_receipts_total").values()) == 0  # counted once, on two
    forged = receipt_body("77777777-0000-4000-8000-000000000000", destination=number)
    assert post_receipt(one, forged).status_code == 503  # never sent: nothing stored
    client = redis_server.client()
    keys = list(client.scan_iter(match="{" + prefix + "}:receipt:*"))
    assert len(keys) == 1  # the sent umid, with its states seen
    assert all(0 < client.pttl(key) <= 48 * 3600 * 1000 for key in keys)
    assert number[1:] not in "".join(keys)


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis-replicas"])
def test_the_canarys_last_attempt_follows_its_own_receipts(receipt_relay, emulator, shared: bool,
                                                           request: pytest.FixtureRequest) -> None:
    """The summary's ``canary`` is the canary's last send and what its own receipts said (on
    every replica when the store is shared); a receipt of another umid changes nothing; the
    number shows nowhere, not even masked."""
    number = fresh_number()
    settings = {"CANARY_NUMBER": number}
    if shared:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        settings.update(STATE_URL=redis_server.url, STATE_PASSWORD_FILE=str(redis_server.password_file),
                        STATE_PREFIX=f"test:canary:{time.monotonic_ns()}")
    relays = [receipt_relay(**settings) for _ in range(2 if shared else 1)]
    one, last = relays[0], relays[-1]
    canary_of = lambda relay: relay.get("/v1/delivery-summary").json().get("canary")  # noqa: E731
    assert canary_of(last) is None  # none sent yet
    umid = sent_umid(one, emulator, number)  # no receipt from 8x8 for this one
    assert canary_of(last)["state"] == "sent"
    other = sent_umid(one, emulator)  # a user's message
    assert post_receipt(last, receipt_body(other, "undelivered", errorCode=1)).status_code == 200
    forged = receipt_body("77777777-0000-4000-8000-000000000000", "delivered")
    assert post_receipt(last, forged).status_code == 503
    assert canary_of(last)["state"] == "sent"  # neither changed it
    assert post_receipt(last, receipt_body(umid, "undelivered", errorCode=1)).status_code == 200
    shown = canary_of(one)
    assert (shown["state"], shown["errorCode"], shown["reason"]) == ("undelivered", "1", "Absent subscriber")
    assert post_receipt(last, receipt_body(umid, "delivered")).status_code == 200  # final stays final
    assert canary_of(one)["state"] == "undelivered"

    emulator.set_outcome(number, "delivered", after_ms=400)
    assert one.post(otp_body(number, code="777111"), KEY).status_code == 202
    wait_for(lambda: canary_of(last)["state"] == "delivered")
    shown = canary_of(last)
    assert set(shown) == {"sentAt", "state", "errorCode", "reason", "deliverySeconds"}
    assert 0.3 <= shown["deliverySeconds"] < 10 and shown["errorCode"] == shown["reason"] == ""
    assert one.metric("otp_relay_canary_sends_total", outcome="accepted") == 2.0
    assert '"recipient":"canary"' in one.logs()
    for relay in relays:
        logs, metrics = relay.logs(), relay.get("/metrics").text
        assert "***" + number[-4:] not in logs and number[1:] not in logs
        assert number[1:] not in metrics and number[1:] not in json.dumps(canary_of(relay))


# --- units ----------------------------------------------------------------------------------
def test_labels_are_bounded_whatever_the_sender_writes() -> None:
    raw = receipt_body("ab", "exploded", destination="+999", errorCode=10**9, detail="x" * 500,
                       errorMessage="free text")
    parsed = receipts.parse(receipts.json.dumps(raw).encode())
    assert parsed is not None
    assert (parsed.state, parsed.detail, parsed.error_code, parsed.reason) == (
        "other", "other", "other", "Other error code")
    for code, folded, reason in ((43, "43", "Spam filter"), (99, "99", "Rejected by 8x8"),
                                 (6, "other", "Other error code"), (62, "other", "Other error code"),
                                 (True, "other", "Other error code")):
        raw = receipt_body("ab", "undelivered", errorCode=code, errorMessage="free text")
        parsed = receipts.parse(receipts.json.dumps(raw).encode())
        assert (parsed.error_code, parsed.reason) == (folded, reason)


def test_the_token_check_accepts_each_line_and_nothing_else() -> None:
    assert receipts.token_matches(list(TOKENS), TOKENS[0])
    assert receipts.token_matches(list(TOKENS), TOKENS[1])
    assert not receipts.token_matches(list(TOKENS), TOKENS[1][:-1])
    assert not receipts.token_matches([], "")
    assert not receipts.token_matches(None, TOKENS[0])


def test_the_window_forgets_old_minutes() -> None:
    now = [0.0]
    window = receipts.DeliveryWindow(window=900, clock=lambda: now[0])
    window.add("sent")
    window.add("undelivered")
    window.add("reason:Absent subscriber")
    now[0] = 899
    assert window.summary()["undelivered"] == 1
    now[0] = 960
    assert window.summary() == {"windowSeconds": 900, **NO_FIGURES,
                                "channels": {"text": NO_FIGURES, "voice": NO_FIGURES}}


def test_memory_receipts_stay_bounded() -> None:
    store = receipts.MemoryReceipts(limit=3)

    async def run() -> list[str]:
        for i in range(10):
            store.sent(f"u{i}", time.time(), "SG")
        return [(await store.first(f"u{i}", "delivered"))[0] for i in range(10)]

    assert asyncio.run(run()) == ["unknown_umid"] * 7 + ["counted"] * 3


def test_a_superseded_token_stops_working_after_the_grace(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{TOKENS[1]}\n")
    now = [time.time()]
    tokens = receipts.ReceiptTokens(WatchedFile("receipt_token", path, parse_signing_keys),
                                    grace=3600, clock=lambda: now[0])
    tokens.refresh()
    path.write_text(f"{TOKENS[1]}\nrcpt-newest-1\n")
    os.utime(path, (now[0] + 5, now[0] + 5))  # a new stamp (same-second writes)
    tokens.refresh()
    assert tokens.accepted() == [TOKENS[1], "rcpt-newest-1"] and tokens.newest == "rcpt-newest-1"
    now[0] += 3599
    assert TOKENS[1] in tokens.accepted()
    now[0] += 2
    assert tokens.accepted() == ["rcpt-newest-1"]  # one rotation revoked the leaked token
    # a relay started after the rotation: the grace runs from the file's modification time
    os.utime(path, (now[0] - 3500, now[0] - 3500))
    later = receipts.ReceiptTokens(WatchedFile("receipt_token", path, parse_signing_keys),
                                   grace=3600, clock=lambda: now[0])
    later.refresh()
    assert TOKENS[1] in later.accepted()
    now[0] += 101
    assert later.accepted() == ["rcpt-newest-1"]


def test_a_receipt_that_overtakes_the_send_is_counted_on_8x8s_retry(receipt_relay, emulator) -> None:
    """8x8 may post a receipt before the relay has read its answer to the send (the emulator
    posts at once): the relay answers 503 for a umid it does not know yet, 8x8 retries after
    1 s, and each of these receipts is counted, once."""
    relay = receipt_relay()
    numbers = [fresh_number() for _ in range(5)]
    for number in numbers:
        emulator.set_outcome(number, "delivered")
        assert relay.post(otp_body(number), KEY).status_code == 202
    wait_for(lambda: relay.get("/v1/delivery-summary").json()["delivered"] == 5, timeout=20)
    assert sum(samples(relay, "otp_relay_receipts_total").values()) == 5
