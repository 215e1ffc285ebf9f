"""The 8x8 emulator's Voice Messaging API answers as 8x8's Voice OpenAPI file and guides say:
callflows accepted and refused with 8x8's status codes (every answer validated against the
schemas, see conftest), calls recorded, the Webhooks API, and session summaries with the
outcome a test chose for the destination."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error

import httpx
import jsonschema
import pytest

from .conftest import CALLER_ID, KEY, SUB, callflow, validate_voice, wait_settled

NUMBER, OTHER = "+6591234567", "+6598765432"
FACTOR = 0.02
IN_AN_HOUR = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
AN_HOUR_AGO = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()


def test_places_and_records_a_call(emu, voice) -> None:
    body = {**callflow(NUMBER, "Your code is 1 2 3", repetition=2, speed=1), "validUntil": IN_AN_HOUR,
            "clientActionId": "otp-7"}
    response = voice.call(body)
    assert response.status_code == 200
    answer = response.json()
    assert (answer["sessionStatus"], answer["statusCode"], answer["statusMessage"], answer["validUntil"]) == (
        "CREATED", 1, "Created", IN_AN_HOUR)
    [call] = emu.calls()
    assert (call.session_id, call.call_flow_request_id) == (answer["sessionId"], answer["callFlowRequestId"])
    assert (call.subaccount, call.destination, call.source, call.text, call.voice_profile, call.repetition,
            call.speed, call.valid_until, call.client_action_id) == (
        SUB, "6591234567", "6568332048", "Your code is 1 2 3", "en-GB-Emma", 2, 1, IN_AN_HOUR, "otp-7")
    assert [a["action"] for a in call.actions] == ["makeCall", "say", "hangup"]


def test_defaults_and_no_valid_until(emu, voice) -> None:
    answer = voice.call(callflow(NUMBER.lstrip("+"))).json()
    assert "validUntil" not in answer
    [call] = emu.calls()
    assert (call.destination, call.repetition, call.speed, call.valid_until, call.client_action_id) == (
        "6591234567", 1, 1, None, None)


# 8x8's example requests: the OpenAPI file's default and its TTS and audio file examples, the
# Voice Messaging guide's TTS and playFile requests (validUntil moved into the future: theirs is past).
SPEC_EXAMPLES = [
    ("6512345678", [{"action": "makeCall", "params": {"source": "6512345678", "destination": "6590000000"}},
                    {"action": "say", "params": {"text": "Hi, This is a test message from 8x8",
                                                 "voiceProfile": "en-GB-Emma", "repetition": 1, "speed": 1}},
                    {"action": "hangup"}]),
    ("+6588000000", [{"action": "makeCall", "params": {"source": "+6588000000", "destination": "+6590000000"}},
                     {"action": "say", "params": {"text": "Hello, this is a reminder about your appointment "
                                                          "tomorrow at 2 PM.", "voiceProfile": "en-GB-Emma",
                                                  "repetition": 1, "speed": 1}},
                     {"action": "hangup"}]),
    ("+6588000000", [{"action": "makeCall", "params": {"source": "+6588000000", "destination": "+6590000000"}},
                     {"action": "playFile", "params": {"fileUrl": "https://example.com/audio/notification.mp3",
                                                       "repetition": 1}},
                     {"action": "hangup"}]),
    ("+6512341234", [{"action": "makeCall", "params": {"source": "+6512341234", "destination": "+6512345678"}},
                     {"action": "say", "params": {"text": "Hello, this is a test Voice Message.",
                                                  "voiceProfile": "en-IE-EmilyNeural", "repetition": 1,
                                                  "speed": 1}},
                     {"action": "hangup"}]),
    ("+6512341234", [{"action": "makeCall", "params": {"source": "+6512341234", "destination": "+6512345678"}},
                     {"action": "playFile", "params": {"fileUrl": "https://sample-videos.com/audio/mp3/wave.mp3",
                                                       "repetition": 2}},
                     {"action": "hangup"}]),
]


@pytest.mark.parametrize(("source", "flow"), SPEC_EXAMPLES, ids=["oas-default", "oas-tts", "oas-file",
                                                                "guide-tts", "guide-file"])
def test_the_specs_example_requests_are_accepted(emu, voice, source, flow) -> None:
    body = {"validUntil": IN_AN_HOUR, "callflow": flow}
    validate_voice(body, "CallflowRequest")  # and our transcription takes them too
    emu.whitelist_caller_id(SUB, source)
    response = voice.call(body)
    assert response.status_code == 200, response.json()
    assert len(emu.calls()) == 1


def _flow(*actions) -> dict:
    return {"callflow": list(actions)}


MAKE = {"action": "makeCall", "params": {"source": CALLER_ID, "destination": NUMBER}}
SAY = {"action": "say", "params": {"text": "Your code is 1 2 3", "voiceProfile": "en-GB-Emma"}}
HANGUP = {"action": "hangup"}


def _say(**params) -> dict:
    return {"action": "say", "params": {**SAY["params"], **params}}


@pytest.mark.parametrize(("body", "status", "code"), [
    ([MAKE], 400, -1001),  # not an object
    ({}, 400, -1009),
    ({"callflow": []}, 400, -1009),
    ({"callflow": "makeCall"}, 400, -1009),
    (_flow(MAKE, {"action": "dial"}), 400, -1007),
    (_flow(MAKE, "say"), 400, -1007),
    (_flow(SAY, MAKE), 422, -1013),
    (_flow(MAKE, MAKE, MAKE, SAY), 422, -1010),
    (_flow(MAKE, HANGUP, SAY), 422, -1012),
    (_flow(MAKE, {"action": "hangup", "params": {}}), 400, -1009),
    (_flow({"action": "makeCall", "params": {"destination": NUMBER}}, SAY), 400, -1009),
    (_flow({"action": "makeCall", "params": {**MAKE["params"], "country": "SG"}}, SAY), 400, -1009),
    (_flow({"action": "makeCall", "params": {"source": CALLER_ID, "destination": 6591234567}}, SAY), 400, -1009),
    (_flow({"action": "makeCall"}, SAY), 400, -1009),
    (_flow(MAKE, {**SAY, "extra": 1}), 400, -1009),
    (_flow(MAKE, {"action": "say", "params": {"text": "x"}}), 400, -1009),
    (_flow(MAKE, _say(text="")), 400, -1009),
    (_flow(MAKE, _say(text="x" * 3001)), 400, -1009),
    (_flow(MAKE, _say(language="en-GB")), 400, -1009),
    (_flow(MAKE, _say(voiceProfile="xx-XX-Nobody")), 400, -1002),
    (_flow(MAKE, _say(repetition=4)), 400, -1009),
    (_flow(MAKE, _say(repetition=0)), 400, -1009),
    (_flow(MAKE, _say(repetition=True)), 400, -1009),
    (_flow(MAKE, _say(repetition=1.5)), 400, -1009),
    (_flow(MAKE, _say(speed=2.5)), 400, -1009),
    (_flow(MAKE, _say(speed=0.4)), 400, -1009),
    (_flow(MAKE, _say(speed="fast")), 400, -1009),
    (_flow(MAKE, {"action": "playFile", "params": {"fileUrl": "ftp://example.com/a.mp3"}}), 400, -1009),
    (_flow({"action": "makeCall", "params": {"source": CALLER_ID, "destination": "12"}}, SAY), 400, -1017),
    (_flow({"action": "makeCall", "params": {"source": CALLER_ID, "destination": "+1123456789"}}, SAY), 400, -1017),
    (_flow({"action": "makeCall", "params": {"source": "+6568332049", "destination": NUMBER}}, SAY), 422, -1014),
    (_flow({"action": "makeCall", "params": {"source": "Shop", "destination": NUMBER}}, SAY), 422, -1014),
    ({**_flow(MAKE, SAY), "validUntil": AN_HOUR_AGO}, 422, -1015),
    ({**_flow(MAKE, SAY), "validUntil": "tomorrow"}, 400, -1009),
    ({**_flow(MAKE, SAY), "validUntil": 5}, 400, -1009),
    ({**_flow(MAKE, SAY), "clientActionId": 5}, 400, -1009),
    ({**_flow(MAKE, SAY), "priority": "high"}, 400, -1009),
    (_flow(MAKE, MAKE, SAY), 422, -9999),  # bridging: not modelled, said so
    (_flow(MAKE, {"action": "sayAndCapture", "params": {"promptMessage": "Press 1", "voiceProfile": "en-GB-Emma"}}),
     422, -9999),
])
def test_validation_errors(emu, voice, body, status, code) -> None:
    response = voice.call(body)
    answer = response.json()
    assert (response.status_code, answer["statusCode"], answer["sessionStatus"]) == (status, code, "NOT_CREATED")
    assert emu.calls() == []


@pytest.mark.parametrize("say", [{"speed": 0.5}, {"speed": 2}, {"speed": 1.25}, {"repetition": 3},
                                 {"text": "x" * 3000}], ids=["slowest", "fastest", "fraction", "thrice", "longest"])
def test_limits_are_inclusive(emu, voice, say) -> None:
    assert voice.call(_flow(MAKE, _say(**say), HANGUP)).status_code == 200


def test_messages_name_the_problem(emu, voice) -> None:
    missing = voice.call(_flow({"action": "makeCall", "params": {"destination": NUMBER}})).json()
    assert missing["statusMessage"] == ("Invalid call flow entry provided. $.callflow[0].params.source: "
                                        "is missing but it is required")
    assert voice.call(_flow(SAY)).json()["statusMessage"] == ("Invalid Callflow : First action should be a "
                                                              "MakeCall action")


def test_body_that_is_not_json(emu, voice) -> None:
    for content, content_type in ((b"callflow=1", "application/json"), (json.dumps(callflow()).encode(), "text/plain")):
        response = voice.call(None, content=content, content_type=content_type)
        assert (response.status_code, response.json()["statusCode"]) == (400, -1001)
    assert emu.calls() == []


def test_auth_errors(emu, voice) -> None:
    emu.add_subaccount("other_sub", "other-key")
    for key in (None, "nope"):
        response = voice.call(callflow(), key=key)
        assert (response.status_code, response.json()["statusCode"]) == (401, 401)
    wrong = voice.call(callflow(), key="other-key")  # a real key, for another subaccount
    assert (wrong.status_code, wrong.json()["statusCode"]) == (404, 404)
    assert wrong.json()["statusMessage"] == f"SubAccount not found by Id : {SUB}"
    illegal = voice.call(callflow(), sub="a!")
    assert (illegal.status_code, illegal.json()["statusCode"]) == (404, 404)
    assert emu.calls() == []


def test_caller_ids_are_per_subaccount(emu, voice) -> None:
    emu.add_subaccount("other_sub", "other-key", caller_ids=["+6511112222"])
    assert voice.call(callflow(source="+6511112222")).json()["statusCode"] == -1014
    whitelisted = emu.whitelist_caller_id(SUB, "6511112222")  # caller IDs stay, like keys
    assert (whitelisted[0], whitelisted[-1]) == ("6568332048", "6511112222")
    assert voice.call(callflow(source="+6511112222")).status_code == 200
    with pytest.raises(urllib.error.HTTPError, match="400"):
        emu.whitelist_caller_id(SUB, "not a number")


def test_speech_profiles(emu, voice) -> None:
    assert voice.call(callflow(profile="fr-FR-DeniseNeural")).json()["statusCode"] == -1002
    emu.add_speech_profile("fr-FR-DeniseNeural", "French")
    assert voice.call(callflow(profile="fr-FR-DeniseNeural")).status_code == 200
    listed = voice.http.get(f"{emu.base_url}/api/v1/subaccounts/{SUB}/speech-profiles",
                            headers={"Authorization": f"Bearer {KEY}"}).json()
    validate_voice(listed, "SpeechProfilesResponse")
    codes = {p["speechProfileCode"]: p["localeCode"] for p in listed["speechProfiles"]}
    assert codes["fr-FR-DeniseNeural"] == "fr-FR" and codes["en-IE-EmilyNeural"] == "en-IE"
    emu.clear()
    assert voice.call(callflow(profile="fr-FR-DeniseNeural")).json()["statusCode"] == -1002


def test_faults_by_api(emu, voice, client) -> None:
    emu.inject("status", status=500, api="voice")
    assert client.send({"destination": NUMBER, "text": "x"}).status_code == 200  # SMS untouched
    failed = voice.call(callflow())
    assert (failed.status_code, failed.json()["statusCode"], failed.json()["statusMessage"]) == (
        500, 500, "Internal server error")
    emu.inject("status", status=429, retry_after=2)  # either API
    limited = voice.call(callflow())
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
    assert voice.call(callflow()).status_code == 200
    assert [r["status"] for r in emu.requests()] == [200, 500, 429, 200]


def test_a_lost_answer_still_places_the_call(emu, voice) -> None:
    """A reset after acceptance: the client sees no answer, 8x8 calls anyway (what a retrying
    client must not turn into a second call)."""
    emu.inject("reset", after_accept=True, api="voice")
    with pytest.raises(httpx.HTTPError):
        voice.call({**callflow(NUMBER), "clientActionId": "otp-9"})
    assert [c.client_action_id for c in emu.calls()] == ["otp-9"]
    assert [(r["status"], r["clientActionId"]) for r in emu.requests()] == [("reset", "otp-9")]


# --- the Webhooks API ---------------------------------------------------------------------

def test_webhooks_api(emu, voice) -> None:
    created = voice.webhooks("POST", {"type": "VSS", "url": "https://example.com/vss", "httpAuthHeader": "s3cret"})
    assert created.status_code == 200
    assert created.json()["webhooks"] == [{"type": "VSS", "url": "https://example.com/vss", "enabled": True,
                                           "httpAuthHeaderAvailable": True}]
    assert "s3cret" not in created.text
    listed = voice.webhooks("GET").json()
    assert (listed["count"], listed["subAccountId"]) == (1, SUB)
    deleted = voice.webhooks("DELETE", kind="VSS")
    assert (deleted.status_code, deleted.json()["statusMessage"], deleted.json()["type"]) == (200, "deleted", "VSS")
    assert voice.webhooks("GET").json()["count"] == 0
    assert voice.webhooks("DELETE", kind="VSS").status_code == 404


def test_webhooks_api_requests_are_recorded_and_take_only_their_own_faults(emu, voice) -> None:
    emu.inject("status", status=503, api="webhooks")
    emu.inject("status", status=500, api="voice")  # a callflows fault: not the Webhooks API's
    assert voice.webhooks("GET").status_code == 503
    assert voice.webhooks("POST", {"type": "VSS", "url": "https://example.com/vss"}).status_code == 200
    assert voice.webhooks("GET").json()["count"] == 1
    assert emu.webhook_requests() == [
        {"method": "GET", "path": f"/api/v1/subaccounts/{SUB}/webhooks", "status": 503},
        {"method": "POST", "path": f"/api/v1/subaccounts/{SUB}/webhooks", "status": 200, "type": "VSS",
         "url": "https://example.com/vss"},
        {"method": "GET", "path": f"/api/v1/subaccounts/{SUB}/webhooks", "status": 200}]
    assert emu.voice_webhooks(SUB)["VSS"]["url"] == "https://example.com/vss"
    assert len(emu.webhook_requests()) == 3  # the admin read is not one
    assert emu.requests() == []  # the send paths' record stays theirs


@pytest.mark.parametrize(("body", "key", "status"), [
    ({"type": "SMS", "url": "https://example.com/x"}, KEY, 422),
    ({"type": "VSS", "url": "not a url"}, KEY, 422),
    ({"type": "VSS", "url": "https://example.com/x", "enabled": "yes"}, KEY, 422),
    ({"type": "VSS"}, KEY, 422),
    ({"type": "VSS", "url": "https://example.com/x"}, None, 401),
    ({"type": "VSS", "url": "https://example.com/x"}, "nope", 401),
])
def test_webhooks_api_refusals(emu, voice, body, key, status) -> None:
    assert voice.webhooks("POST", body, key=key).status_code == status
    assert emu.calls() == [] and voice.webhooks("GET").json()["count"] == 0


# --- session summaries --------------------------------------------------------------------

@pytest.fixture
def vss(emu, receiver):
    """The subaccount's VSS webhook on the receiver, set through 8x8's Webhooks API."""
    emu.set_receipt_time_factor(FACTOR)
    return receiver


def _configure(voice, receiver, path: str = "/vss", header: str | None = "Basic dm9pY2U6cw==", **extra) -> None:
    body = {"type": "VSS", "url": receiver.url + path, "httpAuthHeader": header, **extra}
    assert voice.webhooks("POST", body).status_code == 200


def test_answered_after_the_chosen_time(emu, voice, vss) -> None:
    _configure(voice, vss)
    emu.set_call_outcome(NUMBER, "answered", after_ms=300)
    placed = time.monotonic()
    session = voice.call(callflow(NUMBER, "Your code is 1 2 3 4 5 6", repetition=2)).json()["sessionId"]
    [summary] = vss.wait_for("/vss")
    validate_voice(summary.body, "SessionSummary")
    assert summary.at - placed >= 0.3
    assert summary.headers["Authorization"] == "Basic dm9pY2U6cw=="
    assert (summary.body["namespace"], summary.body["eventType"]) == ("VOICE", "SESSION_SUMMARY")
    payload = summary.body["payload"]
    assert (payload["sessionId"], payload["subAccountId"], payload["sessionStatus"], payload["lastAction"],
            payload["callCount"]) == (session, SUB, "COMPLETED", "SAY", 1)
    assert "errorDetails" not in payload
    [call] = emu.calls()
    leg = payload["details"]["callA"]
    # 9 words read twice at 2.5 words a second: 8 s connected (scaled only in when it is posted)
    assert (leg["callStatus"], leg["callDuration"], call.outcome["duration_s"], call.outcome["sip_code"]) == (
        "COMPLETED", 8, 8, 200)
    assert (leg["source"], leg["destination"], leg["sourceCountryCode"], leg["destinationCountryCode"]) == (
        CALLER_ID, NUMBER, "SG", "SG")
    connected = dt.datetime.fromisoformat(leg["connectedTimestamp"])
    assert dt.datetime.fromisoformat(leg["disconnectedTimestamp"]) - connected == dt.timedelta(seconds=8)
    assert [a["sessionId"] for a in emu.receipts()["attempts"]] == [session]


@pytest.mark.parametrize(("outcome", "status", "sip_code"), [
    ({"kind": "no-answer", "after_ms": 100}, "NO_ANSWER", 480),
    ({"kind": "busy"}, "BUSY", 486),
    ({"kind": "failed", "sip_code": 404}, "FAILED", 404),
    ({"kind": "failed"}, "FAILED", 503),
    ({"kind": "error", "error_code": -2004}, "ERROR", 500),
])
def test_unanswered_outcomes(emu, voice, vss, outcome, status, sip_code) -> None:
    _configure(voice, vss, header=None)
    emu.set_call_outcome(NUMBER, **outcome)
    voice.call(callflow(NUMBER))
    [summary] = vss.wait_for("/vss")
    validate_voice(summary.body, "SessionSummary")
    assert "Authorization" not in summary.headers
    payload = summary.body["payload"]
    leg = payload["details"]["callA"]
    assert (payload["sessionStatus"], payload["lastAction"], leg["callStatus"], leg["callDuration"]) == (
        status, "MAKE_CALL", status, 0)
    assert "connectedTimestamp" not in leg and "callQuality" not in leg
    assert emu.calls()[0].outcome["sip_code"] == sip_code
    if outcome["kind"] == "error":
        assert payload["errorDetails"] == {"errorMsg": "No coverage available for requested area", "errorCode": -2004}
    else:
        assert "errorDetails" not in payload


def test_outcomes_are_per_destination(emu, voice, vss) -> None:
    _configure(voice, vss)
    emu.set_call_outcome(NUMBER, "none")
    voice.call(callflow(NUMBER))
    voice.call(callflow(OTHER))
    [summary] = vss.wait_for("/vss")
    wait_settled(emu)
    assert [r.body["payload"]["details"]["callA"]["destination"] for r in vss.received] == [OTHER]
    assert [c.outcome["kind"] for c in emu.calls()] == ["none", "answered"]


def test_no_summary_without_an_enabled_vss_webhook(emu, voice, vss) -> None:
    voice.call(callflow(NUMBER))
    _configure(voice, vss, enabled=False)
    voice.call(callflow(NUMBER))
    _configure(voice, vss, path="/vca", type="VCA")
    voice.call(callflow(NUMBER))
    wait_settled(emu)
    assert vss.received == [] and emu.receipts()["attempts"] == []
    assert len(emu.calls()) == 3


def test_summaries_are_retried_like_receipts(emu, voice, vss) -> None:
    _configure(voice, vss)
    vss.answers["/vss"] = [500, 503]
    voice.call(callflow(NUMBER))
    vss.wait_for("/vss", 3)
    wait_settled(emu)
    assert [a["result"] for a in emu.receipts()["attempts"]] == [500, 503, 200]
    assert len({json.dumps(r.body) for r in vss.received}) == 1


def test_only_loopback_webhooks(emu, voice, vss) -> None:
    assert voice.webhooks("POST", {"type": "VSS", "url": "http://192.0.2.1/vss"}).status_code == 200
    voice.call(callflow(NUMBER))
    wait_settled(emu)
    assert [a["result"] for a in emu.receipts()["attempts"]] == ["not allowed"]


@pytest.mark.parametrize("outcome", [
    {"kind": "ringing"}, {"kind": "failed", "sip_code": 200}, {"kind": "failed", "sip_code": True},
    {"kind": "busy", "sip_code": 486}, {"kind": "error", "error_code": -1}, {"kind": "no-answer", "duration_s": 3},
    {"kind": "answered", "after_ms": -1}, {"kind": "answered", "duration_s": 99999},
])
def test_outcome_refusals(emu, outcome) -> None:
    with pytest.raises(urllib.error.HTTPError, match="400"):
        emu.set_call_outcome(NUMBER, **outcome)


@pytest.mark.parametrize(("instance", "definition"), [
    ({"sessionId": "03cc8cac-376b-11ef-a28b-0582ff0039d5", "sessionStatus": "NOT_CREATED",
      "callFlowRequestId": "03cc3e8b-376b-11ef-a28b-4dd5d900ecb3", "statusCode": 1, "statusMessage": "Created"},
     "CallflowResponse"),
    ({"sessionStatus": "NOT_CREATED", "callFlowRequestId": "c6e6dee5-3846-11ef-9e95-b903e2ed7273",
      "statusCode": "-1007", "statusMessage": "m"}, "CallflowErrorResponse"),
    ({"namespace": "VOICE", "eventType": "CALL_STATUS", "description": "d", "payload": {}}, "SessionSummary"),
    ({"callId": "1f048a83-ea6d-11ee-911b-e9023a97c284", "callDirection": "OUTBOUND", "callType": "PSTN",
      "initiatedTimestamp": "2024-03-25T06:01:28Z", "disconnectedTimestamp": "2024-03-25T06:01:50Z",
      "source": "+12314377870", "destination": "+6568332048", "sourceFormat": "MSISDN",
      "destinationFormat": "MSISDN", "sourceCountryCode": "US", "destinationCountryCode": "SG",
      "callStatus": "ANSWERED", "callDuration": 13}, "CallLeg"),
    ({"callId": "1f048a83-ea6d-11ee-911b-e9023a97c284", "callDirection": "OUTBOUND", "callType": "PSTN",
      "initiatedTimestamp": "2024-03-25T06:01:28Z", "disconnectedTimestamp": "2024-03-25T06:01:50Z",
      "source": "+12314377870", "destination": "+6568332048", "sourceFormat": "MSISDN",
      "destinationFormat": "MSISDN", "sourceCountryCode": "US", "destinationCountryCode": "SG",
      "callStatus": "COMPLETED", "callDuration": 13, "sipCode": 200}, "CallLeg"),
    (callflow(text="x" * 3001), "CallflowRequest"),
    ({"callflow": [MAKE, _say(repetition=4)]}, "CallflowRequest"),
])
def test_voice_schemas_catch_what_8x8_never_sends(instance, definition) -> None:
    """The schema checks above are not vacuous."""
    with pytest.raises(jsonschema.ValidationError):
        validate_voice(instance, definition)
