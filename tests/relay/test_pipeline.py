"""The send pipeline (admit → claim → deliver → settle) and the receipt path in this process:
aiohttp's test server, the session's 8x8 emulator; the request log line as it is written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from otp_relay import config, pipeline
from otp_relay.app import Relay
from tests.fixtures.relay import otp_body, relay_env, signed_headers

from .conftest import API_KEY, SIGNING_KEYS, SUBACCOUNT, TOKENS, fresh_number

KEY = SIGNING_KEYS[1]


class Lines:
    """The ``send`` lines ``pipeline.request_log`` is given."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def info(self, msg: str, fields: dict[str, object]) -> None:
        assert msg == "send"
        self.sent.append(dict(fields))


@asynccontextmanager
async def relay_in_process(emulator: Any, ssl_cert_file: Path, tmp_path: Path, monkeypatch: Any,
                           **settings: str) -> AsyncIterator[tuple[Relay, TestClient, Lines]]:
    env = relay_env(tmp_path, base_url=emulator.base_url, ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT,
                    api_key=API_KEY, signing_keys=SIGNING_KEYS, **settings)
    monkeypatch.setenv("SSL_CERT_FILE", str(ssl_cert_file))
    lines = Lines()
    monkeypatch.setattr(pipeline, "request_log", lines)
    relay = Relay(config.load([], env))
    async with TestClient(TestServer(relay.make_app())) as client:
        yield relay, client, lines


async def post(client: TestClient, body: dict[str, Any], key: str = KEY) -> tuple[int, Any, Any]:
    raw = json.dumps(body).encode()
    answer = await client.post("/v1/messages", data=raw, headers=signed_headers(key, raw))
    return answer.status, answer.headers, await answer.json(content_type=None)


async def test_an_accepted_send_answers_202_and_logs_one_line(emulator, ssl_cert_file, tmp_path, monkeypatch) -> None:
    number = fresh_number()
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch) as (relay, client, lines):
        status, headers, body = await post(client, otp_body(number))
    assert (status, body["status"]) == (202, "queued")
    [message] = emulator.messages()
    assert message.destination == number[1:]
    [line] = lines.sent
    assert isinstance(line.pop("duration_ms"), float)
    assert line == {"request_id": headers["X-Request-Id"], "channel": "text", "segments": 1,
                    "recipient": "***" + number[-4:], "country": "SG", "attempts": 1, "umid": body["id"],
                    "outcome": "accepted", "status": 202}
    assert relay.metrics.registry.get_sample_value("otp_relay_requests_total", {"outcome": "accepted"}) == 1


async def test_the_same_message_again_is_a_replay_not_a_second_sms(emulator, ssl_cert_file, tmp_path,
                                                                  monkeypatch) -> None:
    message = otp_body(fresh_number())
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch) as (_, client, lines):
        first = await post(client, message)
        again = await post(client, message)
    assert (first[0], again[0], again[2]["id"]) == (202, 202, first[2]["id"])
    assert again[1]["Idempotent-Replayed"] == "true"
    assert len(emulator.messages()) == 1
    assert (lines.sent[1]["idempotent"], lines.sent[1]["outcome"], lines.sent[1]["umid"]) == (
        "replayed", "replayed", first[2]["id"])
    assert "attempts" not in lines.sent[1]


async def test_a_recipient_past_its_limit_gets_429(emulator, ssl_cert_file, tmp_path, monkeypatch) -> None:
    number = fresh_number()
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch,
                                PER_RECIPIENT="1/10m") as (relay, client, lines):
        assert (await post(client, otp_body(number, code="111111")))[0] == 202
        status, headers, body = await post(client, otp_body(number, code="222222"))
    assert (status, body["detail"]) == (429, "limit for this recipient reached")
    assert 0 < int(headers["Retry-After"]) <= 600
    assert len(emulator.messages()) == 1
    assert lines.sent[1]["outcome"] == "rate_limited" and "umid" not in lines.sent[1]
    assert relay.metrics.registry.get_sample_value("otp_relay_limit_rejections_total", {"limit": "recipient"}) == 1


async def test_a_bad_signature_gets_401_and_nothing_is_sent(emulator, ssl_cert_file, tmp_path, monkeypatch) -> None:
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch) as (_, client, lines):
        status, headers, body = await post(client, otp_body(fresh_number()), key="not-a-signing-key")
    assert (status, body["title"]) == (401, "Unauthorized")
    assert emulator.messages() == []
    [line] = lines.sent
    assert (line["outcome"], line["detail"]) == ("unauthorized", "signature does not match")
    assert "recipient" not in line and "channel" not in line


async def test_what_8x8_answered_settles_the_key(emulator, ssl_cert_file, tmp_path, monkeypatch) -> None:
    """An 8x8 500 may have been taken: the key is settled unknown and never sent again (504);
    a 4xx surely was not: the key is released and the same message may be sent."""
    maybe_taken, refused = otp_body(fresh_number()), otp_body(fresh_number())
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch) as (_, client, lines):
        emulator.inject("status", status=500)
        first = await post(client, maybe_taken)
        again = await post(client, maybe_taken)
        emulator.inject("status", status=400, code=1002)
        rejected = await post(client, refused)
        retried = await post(client, refused)
    assert (first[0], first[2]["title"], first[2]["upstream_status"]) == (502, "8x8 failed", 500)
    assert (again[0], again[2]["title"]) == (504, "Outcome unknown")
    assert (rejected[0], rejected[2]["title"], retried[0]) == (502, "8x8 rejected the message", 202)
    assert [m.destination for m in emulator.messages()] == [refused["recipient"][1:]]
    assert [line.get("upstream") for line in lines.sent] == [f"500/{first[2]['upstream_code']}", None, "400/1002", None]
    assert [line.get("idempotent") for line in lines.sent] == [None, "outcome_unknown", None, None]


async def test_receipts_go_through_the_send_paths_guards(emulator, ssl_cert_file, tmp_path, monkeypatch) -> None:
    """The receipt path is on the same connection guard's books and reads its body through the
    same bounded read as a send (``pipeline.Intake``); a sent message's receipt counts once."""
    (tmp_path / "receipts").mkdir()
    (tmp_path / "receipts" / "tokens").write_text("".join(f"{t}\n" for t in TOKENS))
    number = fresh_number()
    emulator.set_outcome(number, "none")  # the receipt below is the test's own
    calls: list[str] = []
    real_read = pipeline.Intake.read

    async def read(self: pipeline.Intake, request: Any) -> bytes:
        calls.append(request.path.split("/")[2])
        return await real_read(self, request)

    monkeypatch.setattr(pipeline.Intake, "read", read)
    async with relay_in_process(emulator, ssl_cert_file, tmp_path, monkeypatch,
                                RECEIPT_URL="http://127.0.0.1:9/v1/receipts",
                                RECEIPT_TOKEN_FILE=str(tmp_path / "receipts" / "tokens")) as (relay, client, _):
        await relay.refresh()
        status, _, body = await post(client, otp_body(number))
        receipt = {"namespace": "SMS", "eventType": "outbound_message_status_changed",
                   "payload": {"umid": body["id"], "status": {"state": "delivered",
                                                              "detail": "delivered_to_recipient"}}}
        counted = await client.post(f"/v1/receipts/{TOKENS[1]}", json=receipt)
        repeat = await client.post(f"/v1/receipts/{TOKENS[1]}", json=receipt)
        wrong = await client.post("/v1/receipts/not-a-token", json=receipt)
        books = len(relay.guard), relay.guard.readers
    assert (status, counted.status, repeat.status, wrong.status) == (202, 200, 200, 404)
    assert calls == ["messages", "receipts", "receipts"]  # a wrong token is refused before any read
    assert books[1] == 0  # no connection left counted as reading a body
    registry = relay.metrics.registry
    assert registry.get_sample_value("otp_relay_receipt_requests_total", {"result": "counted"}) == 1
    assert registry.get_sample_value("otp_relay_receipt_requests_total", {"result": "duplicate"}) == 1
