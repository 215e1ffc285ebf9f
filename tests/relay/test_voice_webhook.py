"""The subaccount's VSS webhook (where 8x8 posts call outcomes), kept on the relay's receipt path
by the relay itself: registered at start and after a receipt-token rotation, never rewritten
when already right, never taken over from someone else; reported on /metrics and in the
delivery summary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from otp_relay import webhook
from tests.fixtures.relay import kubelet_volume, voice_body

from .conftest import (
    API_KEY, SIGNING_KEYS, SUBACCOUNT, TOKENS, assert_no_secrets, fresh_number, free_port, samples,
    voice_settings, wait_for,
)

KEY = SIGNING_KEYS[1]


def vss_url(emulator) -> str | None:
    return emulator.voice_webhooks(SUBACCOUNT).get("VSS", {}).get("url")


def shown_url(url: str | None, relay_url: str) -> str:
    """A webhook URL as an assertion may print it: the receipt tokens by name, never by value."""
    if url is None:
        return "none"
    for name, token in zip(("old", "new"), TOKENS):
        url = url.replace(token, f"<{name} token>")
    return url.replace(relay_url, "<relay>")


def pointing(emulator, relay) -> str:
    """Where the subaccount's VSS webhook points, tokens by name: "<relay>/v1/receipts/<new token>"..."""
    return shown_url(vss_url(emulator), relay.url)


OURS_NEW, OURS_OLD = "<relay>/v1/receipts/<new token>", "<relay>/v1/receipts/<old token>"


def calls(emulator) -> list[str]:
    """The Webhooks API requests so far, as "METHOD status"."""
    return [f"{r['method']} {r['status']}" for r in emulator.webhook_requests()]


def state_of(relay) -> str:
    on = [labels for labels, value in samples(relay, "otp_relay_voice_webhook").items() if value == 1]
    assert len(on) == 1, on  # exactly one state at a time
    return dict(on[0])["state"]


def test_the_relay_points_the_vss_webhook_at_itself_on_start_and_gets_its_calls_outcomes(
        receipt_relay, emulator) -> None:
    relay = receipt_relay(**voice_settings(emulator))
    wait_for(lambda: state_of(relay) == "ours")
    assert pointing(emulator, relay) == OURS_NEW  # the newest token
    assert calls(emulator) == ["GET 200", "POST 200"]
    assert [(r["type"], shown_url(r["url"], relay.url)) for r in emulator.webhook_requests()
            if r["method"] == "POST"] == [("VSS", OURS_NEW)]
    assert emulator.voice_webhooks(SUBACCOUNT)["VSS"]["enabled"] is True
    assert relay.get("/v1/delivery-summary").json()["voiceWebhook"] == "ours"
    emulator.set_receipt_time_factor(0.02)
    assert relay.post(voice_body(fresh_number()), KEY).status_code == 202
    wait_for(lambda: relay.get("/v1/delivery-summary").json()["channels"]["voice"]["delivered"] == 1)
    assert_no_secrets(relay.logs(), [API_KEY, *TOKENS, *SIGNING_KEYS])


def test_a_token_rotation_re_registers_with_the_new_token(receipt_relay, emulator) -> None:
    relay = receipt_relay(tokens=(TOKENS[0],), **voice_settings(emulator))
    wait_for(lambda: pointing(emulator, relay) == OURS_OLD)
    kubelet_volume(Path(relay.log_path).parent / "receipts", {"tokens": f"{TOKENS[0]}\n{TOKENS[1]}\n"})
    wait_for(lambda: pointing(emulator, relay) == OURS_NEW)
    wait_for(lambda: state_of(relay) == "ours")
    assert calls(emulator) == ["GET 200", "POST 200", "GET 200", "POST 200"]
    assert_no_secrets(relay.logs(), [API_KEY, *TOKENS])


def test_nothing_is_written_when_the_webhook_is_already_the_relays(receipt_relay, emulator) -> None:
    port = free_port()
    ours = f"http://127.0.0.1:{port}/v1/receipts/{TOKENS[1]}"
    emulator.set_voice_webhook(SUBACCOUNT, ours)
    relay = receipt_relay(port=port, **voice_settings(emulator))
    wait_for(lambda: calls(emulator) == ["GET 200"])
    wait_for(lambda: state_of(relay) == "ours")
    # the token file rewritten with the same tokens (a kubelet resync): still no write
    kubelet_volume(Path(relay.log_path).parent / "receipts", {"tokens": "".join(f"{t}\n" for t in TOKENS)})
    assert relay.post(voice_body(fresh_number()), KEY).status_code == 202
    assert calls(emulator) == ["GET 200"] and pointing(emulator, relay) == OURS_NEW


@pytest.mark.parametrize("foreign", [
    "https://hooks.example.com/8x8/vss/secret-path-7Qx",  # the user's own system
    "http://127.0.0.1:9/v1/receipts/{token}/more",  # not a receipt path of this relay's form
], ids=["elsewhere", "lookalike"])
def test_a_foreign_vss_webhook_is_left_alone_and_reported(receipt_relay, emulator, foreign: str) -> None:
    foreign = foreign.format(token=TOKENS[1])
    emulator.set_voice_webhook(SUBACCOUNT, foreign)
    relay = receipt_relay(**voice_settings(emulator))
    wait_for(lambda: state_of(relay) == "foreign")
    assert relay.get("/v1/delivery-summary").json()["voiceWebhook"] == "foreign"
    kubelet_volume(Path(relay.log_path).parent / "receipts", {"tokens": f"{TOKENS[1]}\n{TOKENS[0]}\n"})  # a new newest token
    wait_for(lambda: len(calls(emulator)) == 2)
    assert calls(emulator) == ["GET 200", "GET 200"]  # looked again, never written
    assert shown_url(vss_url(emulator), relay.url) == shown_url(foreign, relay.url)
    assert state_of(relay) == "foreign"
    logs = relay.logs()
    assert logs.count("VSS webhook points elsewhere") == 1  # once, with its host only
    assert "secret-path" not in logs and "/more" not in logs
    assert_no_secrets(logs, [API_KEY, *TOKENS])


@pytest.mark.parametrize("status", [401, 503])
def test_errors_are_retried_with_backoff_and_block_neither_sends_nor_readiness(receipt_relay, emulator,
                                                                               status: int) -> None:
    emulator.inject("status", status=status, count=None, api="webhooks")  # until cleared
    relay = receipt_relay(**voice_settings(emulator))  # ready at once
    assert relay.post(voice_body(fresh_number()), KEY).status_code == 202
    assert relay.get("/readyz").status_code == 200
    wait_for(lambda: state_of(relay) == "error")
    assert relay.get("/v1/delivery-summary").json()["voiceWebhook"] == "error"
    time.sleep(3)
    tries = len(calls(emulator))  # backoff 0.5-1 s, 1-2 s, 2-4 s...: not one per token-file check
    assert 2 <= tries <= 5 and set(calls(emulator)) == {f"GET {status}"}
    emulator.clear_faults()
    wait_for(lambda: state_of(relay) == "ours")
    assert calls(emulator)[-2:] == ["GET 200", "POST 200"]
    assert relay.logs().count("cannot check the subaccount's VSS webhook") == 1
    assert_no_secrets(relay.logs(), [API_KEY, *TOKENS])


@pytest.mark.parametrize("fault, seen", [
    ({"kind": "latency", "ms": 6000}, "GET"),  # past the relay's 5 s: a timeout to it (answered later)
    ({"kind": "reset"}, "GET reset"),
], ids=["timeout", "reset"])
def test_a_timeout_or_a_reset_is_retried(receipt_relay, emulator, fault: dict, seen: str) -> None:
    emulator.inject(**fault, api="webhooks")
    relay = receipt_relay(**voice_settings(emulator))
    wait_for(lambda: state_of(relay) == "error", timeout=10)
    assert relay.post(voice_body(fresh_number()), KEY).status_code == 202
    wait_for(lambda: state_of(relay) == "ours", timeout=20)
    assert calls(emulator)[0].startswith(seen) and calls(emulator)[-2:] == ["GET 200", "POST 200"]
    assert relay.logs().count("cannot check the subaccount's VSS webhook") == 1


def test_off_without_receipts_and_no_field_without_voice(receipt_relay, make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator))  # voice, but no receipt URL
    assert relay.get("/v1/delivery-summary").json()["voiceWebhook"] == "off"
    assert state_of(relay) == "off"
    texts = receipt_relay()  # receipts, no voice
    assert "voiceWebhook" not in texts.get("/v1/delivery-summary").json()
    assert state_of(texts) == "off"
    assert calls(emulator) == []


URL = "https://otp.example.com/v1/receipts"


@pytest.mark.parametrize("hooks, found", [
    ([], "missing"),
    ([{"type": "VCS", "url": f"{URL}/tok-new", "enabled": True}], "missing"),
    ([{"type": "VSS", "url": f"{URL}/tok-new", "enabled": True}], "ours"),
    ([{"type": "VSS", "url": f"{URL}/tok-new", "enabled": False}], "stale"),  # ours, switched off
    ([{"type": "VSS", "url": f"{URL}/tok-old", "enabled": True}], "stale"),
    ([{"type": "VSS", "url": f"{URL}/tok-new/x", "enabled": True}], "foreign"),
    ([{"type": "VSS", "url": f"{URL}/tok?x=1", "enabled": True}], "foreign"),
    ([{"type": "VSS", "url": f"{URL}x/tok-new", "enabled": True}], "foreign"),
    ([{"type": "VSS", "url": f"{URL}/", "enabled": True}], "foreign"),
    ([{"type": "VSS", "url": "https://elsewhere.example/vss", "enabled": True}], "foreign"),
])
def test_which_webhook_is_the_relays(hooks, found) -> None:
    assert webhook.classify({"webhooks": hooks}, URL, "tok-new") == found


def test_logs_show_a_foreign_webhook_by_its_host_only() -> None:
    assert webhook.shown("https://user:pw@hooks.example.com:8443/a/secret?k=v") == "https://hooks.example.com:8443"


def test_the_webhook_request_is_8x8s_schema() -> None:
    from tests.eightbyeight.conftest import validate_voice  # noqa: PLC0415

    validate_voice(webhook.request_body(URL, "tok-new"), "WebhookRequest")


def test_with_workers_only_worker_0_keeps_the_webhook(receipt_relay, emulator, redis_server) -> None:
    relay = receipt_relay(**voice_settings(emulator), WORKERS="2", STATE_URL=redis_server.url,
                          STATE_PASSWORD_FILE=str(redis_server.password_file),
                          STATE_PREFIX=f"test:vsshook:{time.monotonic_ns()}")
    wait_for(lambda: state_of(relay) == "ours")  # worker 0's admin listener
    time.sleep(0.5)
    assert calls(emulator) == ["GET 200", "POST 200"]


class FakeWebhooks:
    """``EightByEight.call`` stand-in: answers from a list, records (method, url)."""

    def __init__(self, *answers: tuple[int, bytes] | Exception) -> None:
        self.answers, self.seen = list(answers), []

    async def call(self, method, path, api_key, payload=None, timeout=5.0):
        self.seen.append((method, (payload or {}).get("url")))
        answer = self.answers.pop(0) if self.answers else (200, b'{"webhooks": []}')
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_registrar_survives_unreadable_answers_and_waits_for_the_api_key() -> None:
    import asyncio  # noqa: PLC0415

    states: list[str] = []
    key: list[str | None] = [None]
    client = FakeWebhooks((200, b"<html>"), (200, b'{"no": "webhooks"}'), OSError("down"))
    hook = webhook.VoiceWebhook(client, URL, lambda: "tok-new", lambda: key[0], states.append,
                                backoff_base=0.01, backoff_max=0.02)

    async def scenario() -> None:
        task = asyncio.create_task(hook.run())
        await asyncio.sleep(0.3)
        assert client.seen == []  # no API key loaded yet: nothing asked
        key[0] = "k"
        for _ in range(300):
            await asyncio.sleep(0.01)
            if hook.state == "ours":
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert states == ["missing", "error", "ours"]
    assert client.seen == [("GET", None)] * 4 + [("POST", f"{URL}/tok-new")]
    assert webhook.VoiceWebhook(None, URL, lambda: "t", lambda: "k", states.append).state == "off"
