"""Delivery receipts: the emulator POSTs 8x8's documented receipt to ``dlrCallbackUrl`` with the
outcome a test chose for the destination, and retries after 1, 10, 30, 90 s (scaled) on errors."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
import urllib.error

import pytest

from otp_sandbox.eightbyeight import receipts
from otp_sandbox.pki import CertificateAuthority

from .conftest import serve_receiver, tls_context, validate, wait_settled

NUMBER, OTHER = "+6591234567", "+6598765432"
FACTOR = 0.02  # retry intervals 20 ms, 200 ms, 600 ms, 1.8 s; attempt timeout 200 ms
DOCUMENTED_RETRY_INTERVALS = (1.0, 10.0, 30.0, 90.0)  # seconds, 8x8's receipts page


@pytest.fixture
def emu(emu):
    emu.set_receipt_time_factor(FACTOR)
    return emu


def send(client, receiver, path: str, destination: str = NUMBER, **fields) -> tuple[str, float]:
    """Send one message with a callback to ``path`` on the receiver: (umid, time sent)."""
    sent = time.monotonic()
    response = client.send({"destination": destination, "text": "Your code is 123456",
                            "dlrCallbackUrl": receiver.url + path, **fields})
    assert response.status_code == 200
    return response.json()["umid"], sent


def test_delivered_after_the_chosen_time(emu, client, receiver) -> None:
    emu.set_outcome(NUMBER, "delivered", after_ms=400)
    umid, sent = send(client, receiver, "/dlr/a", clientMessageId="otp-1", source="ShopOTP")
    [receipt] = receiver.wait_for("/dlr/a")
    validate(receipt.body, "DeliveryReceipt")
    assert receipt.at - sent >= 0.4
    assert (receipt.body["namespace"], receipt.body["eventType"]) == ("SMS", "outbound_message_status_changed")
    payload = receipt.body["payload"]
    assert {k: payload[k] for k in ("umid", "clientMessageId", "subAccountId", "source", "destination",
                                    "smsCount")} == {
        "umid": umid, "clientMessageId": "otp-1", "subAccountId": "emu_test", "source": "ShopOTP",
        "destination": NUMBER, "smsCount": 1}
    assert (payload["status"]["state"], payload["status"]["detail"]) == ("delivered", "delivered_to_recipient")
    assert "errorCode" not in payload["status"] and payload["price"]["currency"] == "USD"
    assert "batchId" not in payload


def test_undelivered_with_an_error_code(emu, client, receiver) -> None:
    emu.set_outcome(NUMBER, "undelivered", error_code=1)
    send(client, receiver, "/dlr/b")
    [receipt] = receiver.wait_for("/dlr/b")
    validate(receipt.body, "DeliveryReceipt")
    status = receipt.body["payload"]["status"]
    assert (status["state"], status["detail"], status["errorCode"], status["errorMessage"]) == (
        "undelivered", "rejected_by_operator", 1, "Absent subscriber")
    assert "price" not in receipt.body["payload"]  # undelivered messages are not charged


def test_no_receipt(emu, client, receiver) -> None:
    emu.set_outcome(NUMBER, "none")
    send(client, receiver, "/dlr/none", NUMBER)
    send(client, receiver, "/dlr/other", OTHER)  # default outcome: delivered at once
    receiver.wait_for("/dlr/other")
    wait_settled(emu)
    assert [r.path for r in receiver.received] == ["/dlr/other"]
    assert [a["umid"] for a in emu.receipts()["attempts"]] == [receiver.received[0].body["payload"]["umid"]]


def test_outcome_needs_a_known_error_message(emu) -> None:
    with pytest.raises(urllib.error.HTTPError, match="400"):
        emu.set_outcome(NUMBER, "undelivered", error_code=999)
    emu.set_outcome(NUMBER, "undelivered", error_code=999, error_message="Carrier says no")


def test_retries_on_errors_with_the_documented_schedule(emu, client, receiver) -> None:
    receiver.answers["/dlr/retry"] = [500, 404, 503]
    send(client, receiver, "/dlr/retry")
    arrivals = [r.at for r in receiver.wait_for("/dlr/retry", 4)]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    for gap, interval in zip(gaps, DOCUMENTED_RETRY_INTERVALS):
        assert gap >= interval * FACTOR * 0.95, (gaps, interval)
    wait_settled(emu)
    assert [a["result"] for a in emu.receipts()["attempts"]] == [500, 404, 503, 200]
    assert len({str(r.body) for r in receiver.received}) == 1  # the same receipt each time


def test_gives_up_after_four_retries(emu, client, receiver) -> None:
    receiver.answers["/dlr/down"] = [500] * 10
    send(client, receiver, "/dlr/down")
    receiver.wait_for("/dlr/down", 5)
    wait_settled(emu)
    assert [a["attempt"] for a in emu.receipts()["attempts"]] == [1, 2, 3, 4, 5]
    assert len(receiver.received) == 5


def test_retries_after_connection_errors_and_timeouts(emu, client, receiver) -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client.send({"destination": NUMBER, "text": "x", "dlrCallbackUrl": f"http://127.0.0.1:{port}/dlr"})
    receiver.delays["/dlr/slow"] = [2.0]  # longer than the scaled attempt timeout (0.2 s)
    send(client, receiver, "/dlr/slow", OTHER)
    receiver.wait_for("/dlr/slow", 2)
    wait_settled(emu)
    results = {}
    for attempt in emu.receipts()["attempts"]:
        results.setdefault(attempt["body"]["payload"]["destination"], []).append(attempt["result"])
    assert results == {NUMBER: ["connection error"] * 5, OTHER: ["timeout", 200]}


def test_https_callbacks_need_a_trusted_certificate(emu, client, sandbox_ca, tmp_path) -> None:
    """The emulator trusts the sandbox CA (as 8x8 trusts public CAs) and nothing else."""
    stranger = CertificateAuthority(tmp_path / "stranger-ca")
    with serve_receiver(tls_context(sandbox_ca, "dlr-receiver")) as trusted, \
            serve_receiver(tls_context(stranger, "dlr-stranger")) as untrusted:
        send(client, untrusted, "/dlr/tls", NUMBER)
        send(client, trusted, "/dlr/tls", OTHER)
        [receipt] = trusted.wait_for("/dlr/tls")
        assert receipt.body["payload"]["destination"] == OTHER
        wait_settled(emu)
        assert untrusted.received == []
    failed = [a["result"] for a in emu.receipts()["attempts"] if a["body"]["payload"]["destination"] == NUMBER]
    assert failed == ["connection error"] * 5


def test_only_loopback_callbacks(emu, client) -> None:
    client.send({"destination": NUMBER, "text": "x", "dlrCallbackUrl": "http://192.0.2.1/dlr"})
    wait_settled(emu)
    assert [a["result"] for a in emu.receipts()["attempts"]] == ["not allowed"]


def test_batch_receipts_name_the_batch(emu, client, receiver) -> None:
    answer = client.send({"clientBatchId": "b-7", "template": {"text": "x", "dlrCallbackUrl": receiver.url + "/dlr/batch"},
                          "messages": [{"destination": NUMBER, "clientMessageId": "m1"}]}, batch=True).json()
    [receipt] = receiver.wait_for("/dlr/batch")
    validate(receipt.body, "DeliveryReceipt")
    payload = receipt.body["payload"]
    assert (payload["batchId"], payload["clientBatchId"], payload["clientMessageId"]) == (
        answer["batchId"], "b-7", "m1")


def test_clear_cancels_pending_receipts(emu, client, receiver) -> None:
    emu.set_outcome(NUMBER, "delivered", after_ms=500)
    send(client, receiver, "/dlr/cancelled")
    assert emu.receipts()["pending"] == 1
    emu.clear()
    assert emu.receipts()["pending"] == 0
    emu.set_outcome(OTHER, "delivered", after_ms=1000)  # sent later, due later
    send(client, receiver, "/dlr/kept", OTHER)
    receiver.wait_for("/dlr/kept")
    assert [r.path for r in receiver.received] == ["/dlr/kept"]


def test_real_schedule_by_default(emu) -> None:
    assert receipts.RETRY_INTERVALS == DOCUMENTED_RETRY_INTERVALS
    assert emu.receipts()["time_factor"] == FACTOR
    emu.clear()
    assert emu.receipts()["time_factor"] == 1.0
    for wrong in (0, 2, "fast", True):
        with pytest.raises(urllib.error.HTTPError, match="400"):
            emu.set_receipt_time_factor(wrong)


def test_allowed_networks_widen_loopback_only() -> None:
    dispatcher = receipts.Dispatcher(ssl.create_default_context(),
                                     allowed_networks=[ipaddress.ip_network("192.0.2.0/24")])
    allowed = [asyncio.run(dispatcher._allowed(url)) for url in (
        "http://127.0.0.1:9/dlr", "https://[::1]/dlr", "http://192.0.2.7/dlr", "http://198.51.100.1/dlr")]
    assert allowed == [True, True, True, False]
