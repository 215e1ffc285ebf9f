"""The 8x8 emulator follows the documented contract (validation, errors, REJECTED, faults)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from otp_sandbox.eightbyeight import EightByEightEmulator

SUB, KEY = "emu_test", "emu-key-1"


@pytest.fixture
def emu(sms_emulator: EightByEightEmulator) -> EightByEightEmulator:
    sms_emulator.add_subaccount(SUB, KEY)
    sms_emulator.clear()
    return sms_emulator


@pytest.fixture
def client(sandbox_ca) -> httpx.Client:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sandbox_ca.cert_path))) as c:
        yield c


def send(client: httpx.Client, emu: EightByEightEmulator, body, *, key: str = KEY, sub: str = SUB,
         batch: bool = False) -> httpx.Response:
    path = f"/api/v1/subaccounts/{sub}/messages" + ("/batch" if batch else "")
    return client.post(emu.base_url + path, json=body, headers={"Authorization": f"Bearer {key}"})


def test_accepts_and_records(emu, client) -> None:
    response = send(client, emu, {"destination": "+6591234567", "text": "hello", "source": "Shop",
                                  "clientMessageId": "abc", "clientIp": "203.0.113.9"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"]["code"] == "QUEUED" and answer["clientMessageId"] == "abc"
    [message] = emu.messages()
    assert (message.umid, message.destination, message.text, message.source, message.client_ip) == (
        answer["umid"], "6591234567", "hello", "Shop", "203.0.113.9")


@pytest.mark.parametrize(("body", "code"), [
    ({"destination": "12", "text": "x"}, 1002),
    ({"destination": "+0123456789", "text": "x"}, 1002),
    ({"destination": "+6591234567", "text": "x", "encoding": "UTF8"}, 1003),
    ({"destination": "+6591234567", "text": "x", "source": "S" * 17}, 1005),
    ({"destination": "+6591234567", "text": "x", "clientMessageId": "c" * 51}, 3009),
])
def test_validation_errors(emu, client, body, code) -> None:
    response = send(client, emu, body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == code and {"message", "errorId", "timestamp"} <= error.keys()
    assert emu.messages() == []


def test_auth_errors(emu, client) -> None:
    emu.add_subaccount("other_sub", "other-key")
    body = {"destination": "+6591234567", "text": "x"}
    assert send(client, emu, body, key="nope").json()["code"] == 1200
    wrong = send(client, emu, body, key="other-key")
    assert (wrong.status_code, wrong.json()["code"]) == (403, 1201)
    illegal = send(client, emu, body, sub="a!")
    assert (illegal.status_code, illegal.json()["code"]) == (400, 1001)


def test_rejected_is_a_200(emu, client) -> None:
    emu.reject_destination("+6591234567")
    response = send(client, emu, {"destination": "+6591234567", "text": "x"})
    assert response.status_code == 200 and response.json()["status"]["code"] == "REJECTED"


def test_batch(emu, client) -> None:
    response = send(client, emu, {"destinations": ["+6591234567", "+6598765432", "bad"],
                                  "template": {"text": "hi"}, "clientBatchId": "b1",
                                  "includeMessagesInResponse": True}, batch=True)
    answer = response.json()
    assert (answer["acceptedCount"], answer["rejectedCount"], answer["clientBatchId"]) == (2, 1, "b1")
    assert len(answer["messages"]) == 3
    assert {m.batch_id for m in emu.messages()} == {answer["batchId"]}
    too_many = send(client, emu, {"destinations": ["+6591234567"] * 10_001, "template": {"text": "x"}}, batch=True)
    assert too_many.json()["code"] == 1100


def test_faults(emu, client) -> None:
    body = {"destination": "+6591234567", "text": "x"}
    emu.inject("status", status=429, retry_after=3)
    limited = send(client, emu, body)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    emu.inject("status", status=500)
    assert send(client, emu, body).json()["code"] == 2000
    emu.inject("reset")
    with pytest.raises(httpx.HTTPError):
        send(client, emu, body)
    assert send(client, emu, body).status_code == 200  # faults are consumed
    assert [r["status"] for r in emu.requests()] == [429, 500, "reset", 200]


def test_admin_api_is_not_reachable_on_8x8_paths(emu, client) -> None:
    response = client.get(emu.base_url + "/api/v1/subaccounts/__sandbox/messages")
    assert response.status_code in (404, 405)
    assert send(client, emu, {}, sub="__sandbox").status_code in (400, 401, 403)


def test_cli_prints_its_url(sandbox_ca, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("otp-sandbox")), "sms-emulator", "--listen", "127.0.0.1:0",
         "--state-dir", str(tmp_path), "--ca-dir", str(sandbox_ca.directory)],
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
