"""The 8x8 emulator answers as 8x8's OpenAPI spec says: what it accepts and refuses, the
answers' shape (every answer here is validated against the schemas, see conftest), error
codes, REJECTED messages, faults."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest

from .conftest import Client, validate

NUMBER = "+6591234567"
IN_AN_HOUR = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
AN_HOUR_AGO = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()


def test_accepts_and_records(emu, client) -> None:
    response = client.send({"destination": NUMBER, "text": "hello", "source": "Shop",
                            "clientMessageId": "abc", "clientIp": "203.0.113.9", "expiry": IN_AN_HOUR})
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"]["code"] == "QUEUED" and answer["clientMessageId"] == "abc"
    assert (answer["destination"], answer["encoding"]) == ("6591234567", "GSM7")
    [message] = emu.messages()
    assert (message.umid, message.destination, message.text, message.source, message.client_ip) == (
        answer["umid"], "6591234567", "hello", "Shop", "203.0.113.9")


@pytest.mark.parametrize(("text", "requested", "encoding", "parts"), [
    ("Your code is 123456", "AUTO", "GSM7", 1),
    ("Ваш код 123456", "AUTO", "UCS2", 1),
    ("€" * 80, "AUTO", "GSM7", 1),  # "€" is a GSM7 extension: two septets each
    ("€" * 81, "AUTO", "GSM7", 2),
    ("a" * 161, "AUTO", "GSM7", 2),
    ("a" * 71, "UCS2", "UCS2", 2),
], ids=["gsm7", "ucs2", "160-septets", "162-septets", "161-chars", "forced-ucs2"])
def test_answers_the_detected_encoding(emu, client, text, requested, encoding, parts) -> None:
    answer = client.send({"destination": NUMBER, "text": text, "encoding": requested}).json()
    assert answer["encoding"] == encoding
    [message] = emu.messages()
    assert (message.encoding, message.sms_count) == (encoding, parts)


def test_absent_client_message_id_is_left_out(emu, client) -> None:
    answer = client.send({"destination": NUMBER, "text": "x"}).json()
    assert "clientMessageId" not in answer


def test_national_number_with_country(emu, client) -> None:
    answer = client.send({"destination": "91234567", "country": "SG", "text": "x"}).json()
    assert (answer["status"]["code"], answer["destination"]) == ("QUEUED", "6591234567")


@pytest.mark.parametrize(("body", "code"), [
    ({"destination": "+1123456789", "text": "x"}, 1002),  # the spec's own invalid number
    ({"destination": "12", "text": "x"}, 1002),
    ({"destination": "+0123456789", "text": "x"}, 1002),
    ({"destination": "91234567", "text": "x"}, 1002),  # national without country
    ({"destination": 6591234567, "text": "x"}, 1000),
    ({"destination": NUMBER}, 1004),
    ({"destination": NUMBER, "text": ""}, 1004),
    ({"destination": NUMBER, "text": "x", "encoding": "UTF8"}, 1003),
    ({"destination": NUMBER, "text": "x", "source": "S" * 17}, 1005),
    ({"destination": NUMBER, "text": "x", "clientMessageId": "c" * 351}, 3009),
    ({"destination": NUMBER, "text": "x", "expiry": AN_HOUR_AGO}, 1006),
    ({"destination": NUMBER, "text": "x", "expiry": "tomorrow"}, 1006),
    ({"destination": NUMBER, "text": "x", "scheduled": "2999-01-01T00:00:00Z"}, 1011),
    ({"destination": NUMBER, "text": "x", "country": "SGP"}, 1009),
    ({"destination": NUMBER, "text": "x", "clientIp": "not-an-ip"}, 1012),
    ({"destination": NUMBER, "text": "x", "dlrCallbackUrl": "not a url"}, 3020),
    ({"destination": NUMBER, "text": "x", "track": "Always"}, 1000),
    ([{"destination": NUMBER, "text": "x"}], 1000),
])
def test_validation_errors(emu, client, body, code) -> None:
    response = client.send(body)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert emu.messages() == []


def test_longest_client_message_id_is_accepted(emu, client) -> None:
    assert client.send({"destination": NUMBER, "text": "x", "clientMessageId": "c" * 350}).status_code == 200


@pytest.mark.parametrize(("content_type", "status"), [
    ("text/plain", 400),
    ("application/x-www-form-urlencoded", 400),
    ("application/json; charset=utf-8", 200),
])
def test_only_json_bodies(emu, client, content_type, status) -> None:
    response = client.send({"destination": NUMBER, "text": "x"}, content_type=content_type)
    assert response.status_code == status
    assert len(emu.messages()) == (status == 200)


def test_body_that_is_not_json(emu, client) -> None:
    response = client.send(None, content=b"destination=+6591234567")
    assert (response.status_code, response.json()["code"]) == (400, 1000)


def test_auth_errors(emu, client) -> None:
    emu.add_subaccount("other_sub", "other-key")
    body = {"destination": NUMBER, "text": "x"}
    for key in (None, "nope"):
        missing = client.send(body, key=key)
        assert (missing.status_code, missing.json()["code"]) == (401, 1200)
    wrong = client.send(body, key="other-key")  # a real key, for another subaccount
    assert (wrong.status_code, wrong.json()["code"]) == (400, 1001)
    illegal = client.send(body, sub="a!")
    assert (illegal.status_code, illegal.json()["code"]) == (400, 1001)
    assert emu.messages() == []


def test_rejected_is_a_200(emu, client) -> None:
    emu.reject_destination(NUMBER)
    response = client.send({"destination": NUMBER, "text": "x"})
    assert response.status_code == 200 and response.json()["status"]["code"] == "REJECTED"


def test_batch(emu, client) -> None:
    response = client.send({
        "clientBatchId": "b1", "template": {"text": "hi", "source": "Shop"},
        "includeMessagesInResponse": True,
        "messages": [
            {"destination": "+6591234567", "clientMessageId": "m1"},
            {"destination": "+6598765432", "text": "Ваш код", "clientMessageId": "m2"},
            {"destination": "+1123456789", "clientMessageId": "m3"},
            {"destination": "+6598765433", "source": "S" * 17},
            {"destination": "+6598765434", "expiry": AN_HOUR_AGO},
            {"destination": "+6598765435", "text": ""},
        ]}, batch=True)
    answer = response.json()
    assert (answer["acceptedCount"], answer["rejectedCount"], answer["clientBatchId"]) == (2, 4, "b1")
    assert [(m["status"]["code"], m["encoding"]) for m in answer["messages"]] == [
        ("QUEUED", "GSM7"), ("QUEUED", "UCS2"), ("REJECTED", "GSM7"),
        ("REJECTED", "GSM7"), ("REJECTED", "GSM7"), ("REJECTED", "GSM7")]
    rejected = answer["messages"][2]
    assert (rejected["destination"], rejected["clientMessageId"], rejected["status"]["description"]) == (
        "+1123456789", "m3", "Invalid MSISDN format (not E.164 international number)")
    assert [m["status"]["description"] for m in answer["messages"][3:]] == [
        "Invalid Source value. Reached max allowed limit", "Expiry time already reached",
        "Text value is missing"]
    assert len({m["umid"] for m in answer["messages"]}) == 6
    assert [(m.destination, m.batch_id) for m in emu.messages()] == [
        ("6591234567", answer["batchId"]), ("6598765432", answer["batchId"])]


def test_batch_with_destinations_and_defaults(emu, client) -> None:
    answer = client.send({"destinations": [NUMBER, "+6598765432"], "template": {"text": "hi"}},
                         batch=True).json()
    assert (answer["acceptedCount"], answer["rejectedCount"]) == (2, 0)
    assert "clientBatchId" not in answer and "messages" not in answer


@pytest.mark.parametrize(("body", "code"), [
    ({}, 3012),
    ({"messages": []}, 3012),
    ({"destinations": [NUMBER] * 10_001, "template": {"text": "x"}}, 1100),
    ({"destinations": [NUMBER], "template": {"text": "x"}, "clientBatchId": "b" * 21}, 3014),
    ({"destinations": [NUMBER], "template": "x"}, 1007),
    ({"messages": [{"destination": NUMBER, "text": "x"}, {"destination": NUMBER, "text": "x",
                                                          "encoding": "UTF8"}]}, 1003),
])
def test_batch_request_errors(emu, client, body, code) -> None:
    response = client.send(body, batch=True)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert emu.messages() == []


def test_faults(emu, client) -> None:
    body = {"destination": NUMBER, "text": "x"}
    emu.inject("status", status=429, retry_after=3)
    limited = client.send(body)
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["code"]) == (429, "3", 429)
    emu.inject("status", status=500)
    assert client.send(body).json()["code"] == 2000
    emu.inject("reset")
    with pytest.raises(httpx.HTTPError):
        client.send(body)
    assert client.send(body).status_code == 200  # faults are consumed
    assert [r["status"] for r in emu.requests()] == [429, 500, "reset", 200]


@pytest.mark.parametrize(("answer", "definition"), [
    ({"umid": "u", "clientMessageId": None, "destination": "6591234567", "encoding": "GSM7",
      "status": {"code": "QUEUED", "description": "d"}}, "SmsResponse"),
    ({"umid": None, "destination": "bad", "status": {"code": "REJECTED", "description": "d"}},
     "SmsResponse"),
    ({"batchId": "not-a-uuid", "acceptedCount": 1, "rejectedCount": 0}, "BatchSmsResponse"),
    ({"code": 1201, "message": "m", "errorId": "e", "timestamp": "now"}, "ErrorResponse"),
])
def test_schemas_catch_what_8x8_never_sends(answer, definition) -> None:
    """The schema check above is not vacuous: answers the emulator once gave fail it."""
    with pytest.raises(jsonschema.ValidationError):
        validate(answer, definition)


def test_admin_api_is_not_reachable_on_8x8_paths(emu, client) -> None:
    response = client.http.get(emu.base_url + "/api/v1/subaccounts/__sandbox/messages")
    assert response.status_code == 405
    as_8x8 = client.send({}, sub="__sandbox")  # just a subaccount the key does not belong to
    assert (as_8x8.status_code, as_8x8.json()["code"]) == (400, 1001)


def test_cli_prints_its_url(sandbox_ca, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("otp-sandbox")), "sms-emulator", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path), "--ca-dir", str(sandbox_ca.directory),
         "--receipt-network", "10.0.0.0/8"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = json.loads(process.stdout.readline())
        assert line["url"].startswith("https://127.0.0.1:")
        with httpx.Client(verify=ssl.create_default_context(cafile=line["ca"])) as c:
            assert c.get(line["url"] + "/__sandbox/health").json() == {"ok": True}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()


def test_cli_refuses_a_bad_receipt_network(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("otp-sandbox")), "sms-emulator", "--state-dir", str(tmp_path),
         "--receipt-network", "everywhere"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--receipt-network" in result.stderr


# --- where an independent check against 8x8's spec found differences (issue 22) -----------

# The request examples of 8x8's OpenAPI file (sms_api.json, SmsRequest and BatchSmsRequest).
SPEC_SINGLE_EXAMPLE = {"source": "AwesomeName", "destination": "6500000000", "text": "Hello world!",
                       "clientMessageId": "1234"}
SPEC_BATCH_EXAMPLE = {
    "clientBatchId": "SmsApi demo",
    "messages": [
        {"destination": "12025550288", "text": "SMS text", "clientMessageId": "1001"},
        {"destination": "+12025550308", "text": "SMS text", "clientMessageId": "1002"},
        {"destination": "2025550308", "country": "US", "clientMessageId": "1003", "source": "VIP",
         "text": "Custom message to this unique person! เป็นอย่างไรบ้าง?"}],
    "template": {"source": "AwesomeName", "text": "Message to the world", "encoding": "AUTO"},
    "includeMessagesInResponse": False,
}


def test_the_specs_example_requests_are_accepted(emu, client) -> None:
    single = client.send(SPEC_SINGLE_EXAMPLE)
    assert single.status_code == 200, single.json()
    assert (single.json()["status"]["code"], single.json()["destination"]) == ("QUEUED", "6500000000")
    batch = client.send(SPEC_BATCH_EXAMPLE, batch=True).json()
    assert (batch["acceptedCount"], batch["rejectedCount"]) == (3, 0)
    assert [m.destination for m in emu.messages()] == ["6500000000", "12025550288", "12025550308",
                                                       "12025550308"]


@pytest.mark.parametrize("destination", ["+1123456789", "+659123456", "+65912345678"],
                         ids=["spec-refusal", "sg-short", "sg-long"])
def test_numbers_of_the_wrong_length_are_refused(emu, client, destination) -> None:
    response = client.send({"destination": destination, "text": "x"})
    assert (response.status_code, response.json()["code"]) == (400, 1002)


@pytest.fixture
def tls12_client(sandbox_ca, emu):
    """A client that offers TLS 1.2 at most."""
    context = ssl.create_default_context(cafile=str(sandbox_ca.cert_path))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with httpx.Client(verify=context) as http:
        yield Client(http, emu)


@pytest.mark.parametrize("body", [
    {"destination": NUMBER, "text": "x"},
    {"destination": "91234567", "country": "SG", "text": "x"},
], ids=["international", "national"])
def test_singapore_needs_tls13(emu, client, tls12_client, body) -> None:
    refused = tls12_client.send(body)
    assert refused.status_code == 426
    assert (refused.headers["Upgrade"], refused.json()["code"]) == ("TLS/1.3", 1014)
    assert "Detected: TLSv1.2" in refused.json()["message"]
    assert emu.messages() == []
    assert client.send(body).status_code == 200  # the same message over TLS 1.3


def test_other_destinations_take_tls12(emu, tls12_client) -> None:
    assert tls12_client.send({"destination": "+12025550288", "text": "x"}).status_code == 200


def test_a_batch_with_a_singapore_message_needs_tls13(emu, tls12_client) -> None:
    body = {"destinations": ["+12025550288", NUMBER], "template": {"text": "x"}}
    refused = tls12_client.send(body, batch=True)
    assert (refused.status_code, refused.json()["code"]) == (426, 1014)
    assert emu.messages() == []
    assert tls12_client.send({"destinations": ["+12025550288"], "template": {"text": "x"}},
                             batch=True).json()["acceptedCount"] == 1


@pytest.mark.parametrize(("text", "kept"), [
    ("a" * 1530, 1530),  # 10 parts of 153 septets: kept whole
    ("a" * 1531, 1530),
    ("€" * 766, 765),  # two septets each: 1532 > 1530
    ("Ж" * 671, 670),  # UCS2: 10 parts of 67
], ids=["gsm7-10-parts", "gsm7-over", "gsm7-extension-over", "ucs2-over"])
def test_a_single_send_over_10_parts_is_truncated(emu, client, text, kept) -> None:
    answer = client.send({"destination": NUMBER, "text": text})
    assert answer.status_code == 200 and answer.json()["status"]["code"] == "QUEUED"
    [message] = emu.messages()
    assert (message.text, message.sms_count) == (text[:kept], 10)


def test_a_batch_message_over_10_parts_is_rejected(emu, client) -> None:
    answer = client.send({"includeMessagesInResponse": True, "messages": [
        {"destination": NUMBER, "text": "a" * 1530}, {"destination": "+6598765432", "text": "a" * 1531},
        {"destination": "+6598765433", "text": "Ж" * 671}]}, batch=True).json()
    assert [(m["status"]["code"], m["status"]["description"]) for m in answer["messages"]] == [
        ("QUEUED", "SMS is accepted and queued for processing"),
        ("REJECTED", "Invalid Text value. Reached max allowed limit"),
        ("REJECTED", "Invalid Text value. Reached max allowed limit")]
    assert [m.destination for m in emu.messages()] == ["6591234567"]
