"""Voice OTP through a real relay and the 8x8 emulator's Voice Messaging API: one message is at
most one call (also when Auth0 retries after a lost answer or a timeout), Auth0's spoken text in
the locale's voice, 8x8's refusals as the relay's answers, the per-recipient call window."""

from __future__ import annotations

import datetime as dt
import json
import time

import re

import pytest

from otp_relay import config, messages, upstream
from otp_relay.state import idempotency_key
from tests.fixtures.relay import otp_body, voice_body

from otp_relay.pipeline import callflow
from tests.eightbyeight.conftest import validate_voice

from .test_units import BASE_ENV
from .conftest import (
    API_KEY, CALLER_ID, SIGNING_KEYS, SUBACCOUNT, TOKENS, assert_no_secrets, fresh_number, post_receipt, problem,
    samples, voice_settings, wait_for,
)

KEY = SIGNING_KEYS[1]
PROFILES = "en_GB=en-GB-Emma,da=da-DK-Naja"


def key_of(body: dict) -> str:
    return idempotency_key(body["recipient"], body["code"], body["message_type"], body["text"])


def test_a_voice_otp_is_one_call_with_the_spoken_text_the_locales_voice_and_two_readings(make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator, VOICE_PROFILES=PROFILES))
    number = fresh_number()
    body = voice_body(number, locale="da_DK")
    before = time.time()
    answer = relay.post(body, KEY)
    assert answer.status_code == 202, answer.text
    [call] = emulator.calls()
    assert answer.json() == {"id": call.session_id, "status": "queued", "channel": "voice"}
    assert (call.destination, call.source, call.text, call.voice_profile, call.repetition) == (
        number[1:], CALLER_ID[1:], body["text"], "da-DK-Naja", 2)
    assert [a["action"] for a in call.actions] == ["makeCall", "say", "hangup"]
    assert call.client_action_id == key_of(body)  # 8x8's record of the call names the message
    valid_until = dt.datetime.fromisoformat(call.valid_until.replace("Z", "+00:00")).timestamp()
    assert before + 300 - 2 <= valid_until <= time.time() + 300 + 1  # the code's validity (5m)
    assert emulator.messages() == []  # no SMS

    again = relay.post(body, KEY)  # Auth0 retries the same message
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == answer.json()
    # a locale without its own voice takes its language's, then the default
    relay.post(voice_body(number, code="551177", locale="en_GB"), KEY)
    relay.post(voice_body(number, code="551178", locale="pt_BR"), KEY)
    relay.post(voice_body(number, code="551179"), KEY)
    assert [c.voice_profile for c in emulator.calls()] == ["da-DK-Naja", "en-GB-Emma", "en-US-Standard-A",
                                                           "en-US-Standard-A"]
    assert relay.metric("otp_relay_sends_total", channel="voice", outcome="accepted") == 4
    assert relay.metric("otp_relay_sends_total", channel="voice", outcome="replayed") == 1
    assert relay.metric("otp_relay_upstream_responses_total", channel="voice", status="200") == 4
    assert relay.metric("otp_relay_upstream_responses_total", channel="text") == 0
    logs = relay.logs()
    assert '"channel":"voice"' in logs and "***" + number[-4:] in logs
    assert_no_secrets(logs, [number, body["code"], " ".join(body["code"]), API_KEY, *SIGNING_KEYS])


@pytest.mark.parametrize("fault", [
    {"kind": "reset", "after_accept": True},  # 8x8 created the call, its answer was lost
    {"kind": "latency", "ms": 2500},  # 8x8 answers after the relay's deadline
], ids=["lost-answer", "timeout"])
def test_an_auth0_retry_after_an_unknown_outcome_places_no_second_call(make_relay, emulator, fault) -> None:
    relay = make_relay(**voice_settings(emulator), DEADLINE="1.5")
    body = voice_body(fresh_number())
    emulator.inject(**fault, api="voice")
    first = relay.post(body, KEY)
    assert first.status_code == 504, first.text
    if fault["kind"] == "reset":
        wait_for(lambda: len(emulator.calls()) == 1)  # 8x8 placed the call
    for _ in range(3):  # Auth0's retries of the same message
        assert relay.post(body, KEY).status_code == 504
    time.sleep(0.5)
    assert len(emulator.calls()) <= 1
    assert len([r for r in emulator.requests() if r["path"].endswith("/callflows")]) == 1


def test_voice_off_is_a_422_that_says_so(make_relay, emulator) -> None:
    relay = make_relay()
    answer = relay.post(voice_body(fresh_number()), KEY)
    assert answer.status_code == 422
    assert problem(answer)["detail"] == "voice delivery is not configured on this channel; use 'text'"
    assert emulator.calls() == [] and emulator.messages() == []


@pytest.mark.parametrize("settings, status, code", [
    ({"VOICE_CALLER_ID": "+6568339999"}, 422, "-1014"),  # not whitelisted by 8x8
    ({"VOICE_PROFILE": "fr-FR-DeniseNeural"}, 400, "-1002"),  # not a speech profile of the account
], ids=["unknown-caller-id", "unknown-voice-profile"])
def test_8x8_refusing_the_call_is_the_relays_final_502_with_8x8s_code(make_relay, emulator, settings,
                                                                       status, code) -> None:
    relay = make_relay(**voice_settings(emulator, **settings))
    body = voice_body(fresh_number())
    answer = relay.post(body, KEY)
    assert answer.status_code == 502
    details = problem(answer)
    assert (details["upstream_status"], details["upstream_code"], details["title"]) == (
        status, code, "8x8 rejected the call")
    assert emulator.calls() == []
    # 8x8 refused it: nothing was placed, so the key is free (the caller drops it anyway)
    assert len([r for r in emulator.requests() if r["path"].endswith("/callflows")]) == 1
    assert relay.metric("otp_relay_sends_total", channel="voice", outcome="upstream_rejected") == 1


@pytest.mark.parametrize("status, body, expected", [
    (200, {"sessionId": "0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f", "sessionStatus": "CREATED", "statusCode": 1},
     upstream.Accepted("0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f")),
    (200, {"sessionStatus": "CREATED"}, upstream.Unknown("8x8 answered without a usable session id; outcome unknown")),
    (200, {"sessionId": "x y <script>", "sessionStatus": "CREATED"},
     upstream.Unknown("8x8 answered without a usable session id; outcome unknown")),
    (200, {"sessionStatus": "NOT_CREATED", "statusCode": -1015, "statusMessage": "expired"},
     upstream.Rejected(200, "-1015", "expired")),
    (422, {"sessionStatus": "NOT_CREATED", "statusCode": -1014, "statusMessage": "Source or caller ID is not allowed"},
     upstream.Rejected(422, "-1014", "Source or caller ID is not allowed")),
    (401, {"statusCode": 401, "statusMessage": "Authentication header not found or token invalid"},
     upstream.Rejected(401, "401", "Authentication header not found or token invalid")),
    (500, b"<html>oops</html>", upstream.Rejected(500, "500", "")),
    (302, b"", upstream.Rejected(302, "REDIRECT", "8x8 answered with a redirect; not followed")),
    (429, b"", None), (503, b"", None),
])
def test_8x8s_voice_answers_are_read_like_its_sms_answers(status, body, expected) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    assert upstream.interpret_voice(status, raw) == expected


def test_a_voice_500_is_a_final_502_and_never_a_second_call(make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator))
    body = voice_body(fresh_number())
    emulator.inject("status", status=500, api="voice")
    first = relay.post(body, KEY)
    assert (first.status_code, problem(first)["title"]) == (502, "8x8 failed")
    again = relay.post(body, KEY)  # 8x8 may have placed it: the key is kept as unknown
    assert again.status_code == 504
    assert len([r for r in emulator.requests() if r["path"].endswith("/callflows")]) == 1


def test_a_voice_503_is_retried_like_an_sms_one(make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator))
    emulator.inject("status", status=503, api="voice")
    assert relay.post(voice_body(fresh_number()), KEY).status_code == 202
    assert len(emulator.calls()) == 1
    assert relay.metric("otp_relay_upstream_responses_total", channel="voice", status="503") == 1


def test_a_landline_gets_a_call_but_no_text(make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator))
    landline = "+6561234567"  # Singapore fixed line
    assert relay.post(voice_body(landline), KEY).status_code == 202
    refused = relay.post(otp_body(landline), KEY)
    assert refused.status_code == 403 and "FIXED_LINE" in problem(refused)["detail"]
    premium = relay.post(voice_body("+19005550123"), KEY)  # premium rate: no call either
    assert premium.status_code == 403
    assert problem(premium)["detail"] == "numbers of type PREMIUM_RATE get no call by policy"
    assert len(emulator.calls()) == 1


def test_calls_have_their_own_stricter_window_per_recipient(make_relay, emulator) -> None:
    relay = make_relay(**voice_settings(emulator, VOICE_PER_RECIPIENT="2/1h"))
    number = fresh_number()
    statuses = [relay.post(voice_body(number, code=f"7700{i:02d}"), KEY).status_code for i in range(3)]
    assert statuses == [202, 202, 429]
    limited = relay.post(voice_body(number, code="770099"), KEY)
    assert problem(limited)["detail"] == "call limit for this recipient reached"
    assert 3590 <= int(limited.headers["Retry-After"]) <= 3600
    assert relay.post(otp_body(number), KEY).status_code == 202  # texts: their own window
    assert relay.metric("otp_relay_limit_rejections_total", limit="voice_recipient") == 2
    assert len(emulator.calls()) == 2


@pytest.mark.parametrize("env, message", [
    ({"OTP_RELAY_VOICE": "true"}, "--voice-caller-id / OTP_RELAY_VOICE_CALLER_ID: required with --voice"),
    ({"OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": "6568332048"}, "the caller ID must be an E.164 number"),
    ({"OTP_RELAY_VOICE": "yes please"}, "--voice / OTP_RELAY_VOICE: expected true or false"),
    ({"OTP_RELAY_VOICE_REPETITION": "4"}, "--voice-repetition / OTP_RELAY_VOICE_REPETITION: expected 1, 2 or 3"),
    ({"OTP_RELAY_VOICE_PROFILES": "en_GB"}, "expected LOCALE=PROFILE entries"),
    ({"OTP_RELAY_VOICE_PROFILE": "Emma"}, "expected an 8x8 speech profile code"),
    ({"OTP_RELAY_VOICE_BASE_URL": "http://127.0.0.1:9"}, "--voice-base-url / OTP_RELAY_VOICE_BASE_URL: expected an https://"),
    ({"OTP_RELAY_VOICE_PER_RECIPIENT": "3 an hour"}, "--voice-per-recipient / OTP_RELAY_VOICE_PER_RECIPIENT"),
], ids=["no-caller-id", "caller-id-not-e164", "flag", "repetition", "profiles", "profile", "base-url", "window"])
def test_bad_voice_settings_say_what_is_wrong(env, message) -> None:
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load([], {**BASE_ENV, **env})


def test_voice_settings_and_their_defaults() -> None:
    off = config.load([], BASE_ENV)
    assert (off.voice_enabled, off.voice_base_url, off.voice_repetition, off.voice_per_recipient) == (
        False, "https://voice.8x8.com", 2, config.Rate(3, 3600))
    assert config.load([], {**BASE_ENV, "OTP_RELAY_SMS_REGION": "eu"}).voice_base_url == "https://voice.8x8.uk"
    on = config.load([], {**BASE_ENV, "OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": CALLER_ID,
                          "OTP_RELAY_VOICE_PROFILES": "en_GB=en-GB-Emma, da=da-DK-Naja"})
    assert [on.voice_profile_for(locale) for locale in ("en_GB", "en-gb", "da_DK", "en", None, "x" * 40)] == [
        "en-GB-Emma", "en-GB-Emma", "da-DK-Naja", "en-US-Standard-A", "en-US-Standard-A", "en-US-Standard-A"]


@pytest.mark.parametrize("given, said", [
    ("<Response><Say>Your code is 4 8 2</Say></Response>", "Your code is 4 8 2"),
    ('<speak>Code <say-as interpret-as="digits">482</say-as>.</speak>', "Code 482 ."),
    ("Tom &amp; Jerry: 1 &lt; 2", "Tom & Jerry: 1 < 2"),
    ("plain words\n  twice", "plain words twice"),
])
def test_voice_text_is_said_without_its_markup(given: str, said: str) -> None:
    body = {"recipient": "+6591234567", "text": given, "message_type": "otp_verify",
            "delivery_method": "voice", "code": "482"}
    parsed = messages.parse(json.dumps(body).encode(), voice=True)
    assert parsed.text == said
    assert parsed.idempotency_key == key_of(body)  # the key is over the text as sent (the caller's formula)
    assert messages.parse(json.dumps({**body, "delivery_method": "text"}).encode()).text == given  # SMS: as sent


def test_voice_text_that_is_only_markup_is_a_400() -> None:
    body = {"recipient": "+6591234567", "text": "<Response><Say></Say></Response>",
            "message_type": "otp_verify", "delivery_method": "voice"}
    refused = messages.parse(json.dumps(body).encode(), voice=True)
    assert (refused.status, refused.detail) == (400, "'text' has nothing to say once its markup is removed")


def test_the_callflow_the_relay_sends_is_8x8s_request_schema() -> None:
    """What ``pipeline.callflow`` builds, checked against 8x8's CallflowRequest (the schema copy
    the emulator's tests use, spec/README.md)."""
    settings = config.load([], {**BASE_ENV, "OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": CALLER_ID})
    otp = messages.parse(json.dumps(voice_body(locale="en_US")).encode(), voice=True)
    flow = callflow(settings, otp, time.gmtime(1796637900))
    validate_voice(flow, "CallflowRequest")
    # validUntil as the voice API documents it: YYYY-MM-DDTHH:MM:SS.SSSZ
    assert flow["clientActionId"] == otp.idempotency_key and flow["validUntil"] == "2026-12-07T10:05:00.000Z"


# --- call outcomes: 8x8's Voice Session Summary on the receipt path -------------------------
def vss_body(session_id: str, status: str = "COMPLETED", **payload) -> dict:
    """A Voice Session Summary as 8x8 posts it (the parts the relay reads, and free text it must not)."""
    return {"namespace": "VOICE", "eventType": "SESSION_SUMMARY", "description": "Summary of a completed call session",
            "payload": {"sessionId": session_id, "subAccountId": SUBACCOUNT, "sessionStatus": status,
                        "startTime": "2026-12-07T10:00:00Z", "endTime": "2026-12-07T10:00:20Z",
                        "lastAction": "MAKE_CALL", "callCount": 1, **payload,
                        "details": {"callA": {
                            "callId": "5c8e1a52-d3f4-11ef-9b6a-0242ac120002", "callDirection": "OUTBOUND",
                            "callType": "PSTN", "initiatedTimestamp": "2026-12-07T10:00:00Z",
                            "disconnectedTimestamp": "2026-12-07T10:00:20Z", "source": CALLER_ID,
                            "destination": "+6591234567", "sourceFormat": "MSISDN", "destinationFormat": "MSISDN",
                            "sourceCountryCode": "SG", "destinationCountryCode": "SG", "callStatus": status,
                            "callDuration": 0}}}}


def test_the_test_summaries_are_8x8s_schema() -> None:
    validate_voice(vss_body("0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f", "NO_ANSWER"), "SessionSummary")
    validate_voice(vss_body("0f3c5a2e-6b1d-4c55-9a0e-1d2b3c4d5e6f", "ERROR",
                            errorDetails={"errorMsg": "attacker text", "errorCode": -31337}), "SessionSummary")


def summary_webhook(emulator, relay) -> None:
    """Wait for the relay to point the subaccount's VSS webhook at its receipt path (it does so
    itself at start, with the newest receipt token), and speed up 8x8's summaries."""
    wait_for(lambda: emulator.voice_webhooks(SUBACCOUNT).get("VSS", {}).get("url")
             == f"{relay.url}/v1/receipts/{TOKENS[1]}")
    emulator.set_receipt_time_factor(0.02)


def test_call_outcomes_feed_the_delivery_metrics_and_the_summary_per_channel(receipt_relay, emulator) -> None:
    relay = receipt_relay(**voice_settings(emulator))
    summary_webhook(emulator, relay)
    answered, unanswered, failed, errored, texted = (fresh_number() for _ in range(5))
    emulator.set_call_outcome(answered, "answered", after_ms=300, duration_s=1)
    emulator.set_call_outcome(unanswered, "no-answer")
    emulator.set_call_outcome(failed, "failed", sip_code=404)  # 8x8's summary carries no SIP code
    emulator.set_call_outcome(errored, "error", error_code=-2004)
    for number in (answered, unanswered, failed, errored):
        assert relay.post(voice_body(number), KEY).status_code == 202
    assert relay.post(otp_body(texted), KEY).status_code == 202  # 8x8 delivers the SMS at once
    wait_for(lambda: sum(samples(relay, "otp_relay_receipts_total").values()) == 5)
    voice = lambda detail, state, code="": (  # noqa: E731
        ("channel", "voice"), ("country", "SG"), ("detail", detail), ("error_code", code), ("state", state))
    counted = samples(relay, "otp_relay_receipts_total")
    assert {k: v for k, v in counted.items() if ("channel", "voice") in k} == {
        voice("completed", "delivered"): 1.0, voice("no_answer", "undelivered"): 1.0,
        voice("failed", "undelivered"): 1.0, voice("error", "undelivered", "-2004"): 1.0}
    assert samples(relay, "otp_relay_delivery_seconds_count") == {(("channel", "text"),): 1.0,
                                                                 (("channel", "voice"),): 1.0}
    summary = relay.get("/v1/delivery-summary").json()
    assert (summary["sent"], summary["delivered"], summary["undelivered"], summary["ratio"]) == (5, 2, 3, 0.4)
    text, calls = summary["channels"]["text"], summary["channels"]["voice"]
    assert (text["sent"], text["delivered"], text["undelivered"], text["ratio"]) == (1, 1, 0, 1.0)
    assert (calls["sent"], calls["delivered"], calls["undelivered"], calls["ratio"]) == (4, 1, 3, 0.25)
    assert calls["topFailureReason"] in ("No answer", "Call failed", "No coverage available for requested area")
    assert summary["topFailureReason"] == calls["topFailureReason"]
    # 8x8 retrying a summary counts once
    assert post_receipt(relay, vss_body(emulator.calls()[1].session_id, "NO_ANSWER")).status_code == 200
    assert relay.get("/v1/delivery-summary").json()["channels"]["voice"]["undelivered"] == 3
    assert relay.metric("otp_relay_receipt_requests_total", result="duplicate") == 1
    logs = relay.logs()
    assert_no_secrets(logs, [answered, unanswered, failed, errored, texted, *TOKENS, API_KEY])


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_forged_and_unknown_session_summaries_change_nothing(receipt_relay, emulator, shared: bool,
                                                              request: pytest.FixtureRequest) -> None:
    settings = voice_settings(emulator)
    if shared:
        redis_server = request.getfixturevalue("redis_server")
        settings.update(STATE_URL=redis_server.url, STATE_PASSWORD_FILE=str(redis_server.password_file),
                        STATE_PREFIX=f"test:vss:{time.monotonic_ns()}")
    relay = receipt_relay(**settings)
    number = fresh_number()
    emulator.set_call_outcome(number, "none")  # 8x8 sends no summary of its own: this test posts them
    session = relay.post(voice_body(number), KEY).json()["id"]
    emulator.set_outcome(number, "none")
    umid = relay.post(otp_body(number), KEY).json()["id"]  # an SMS of this relay
    time.sleep(0.2)  # the shared record is written after the answer
    before = relay.get("/v1/delivery-summary").json()
    assert post_receipt(relay, vss_body(session), TOKENS[1] + "x").status_code == 404  # bad token
    assert post_receipt(relay, vss_body("77777777-0000-4000-8000-000000000000")).status_code == 503  # unknown
    assert post_receipt(relay, vss_body(umid)).status_code == 503  # an SMS's umid is no call of this relay
    assert post_receipt(relay, vss_body("x y", errorDetails={"errorMsg": "attacker text"})).status_code == 400
    assert relay.get("/v1/delivery-summary").json() == before
    assert samples(relay, "otp_relay_receipts_total") == {}
    results = samples(relay, "otp_relay_receipt_requests_total")
    assert results[(("result", "unknown_umid"),)] >= 2 and results[(("result", "bad_token"),)] == 1
    # the SMS's own receipt still counts (the forged summary marked none of its states)
    assert post_receipt(relay, {"namespace": "SMS", "eventType": "outbound_message_status_changed",
                                "payload": {"umid": umid, "status": {"state": "delivered"}}}).status_code == 200
    # and the call's real summary counts, with 8x8's error code but never its text
    failed = vss_body(session, "ERROR", errorDetails={"errorMsg": "attacker text", "errorCode": -31337})
    assert post_receipt(relay, failed).status_code == 200
    assert relay.get("/v1/delivery-summary").json()["channels"]["voice"] == {
        "sent": 1, "delivered": 0, "undelivered": 1, "ratio": 0.0, "topFailureReason": "8x8 voice error"}
    assert samples(relay, "otp_relay_receipts_total")[
        (("channel", "voice"), ("country", "SG"), ("detail", "error"), ("error_code", "other"),
         ("state", "undelivered"))] == 1.0
    assert "attacker text" not in relay.logs()
