"""Voice call outcomes: the Voice Session Summary (VSS) 8x8 POSTs when a callflow session ends.

Format from 8x8's "Session Summary (Voice Messaging)" page: ``namespace`` VOICE, ``eventType``
SESSION_SUMMARY, a ``payload`` with the ``sessionId``, ``sessionStatus`` (COMPLETED, NO_ANSWER,
BUSY, CANCELED, FAILED, ERROR), times, ``lastAction``, ``callCount``, ``errorDetails`` for ERROR,
and one entry per call leg in ``details`` (``callA``: ``callStatus``, ``callDuration`` in
seconds, numbers, country codes...). It goes to the subaccount's webhook of type ``VSS``
(8x8's Webhooks API), with its ``httpAuthHeader`` as the ``Authorization`` header.

8x8's "Voice IP addresses" page says Voice Messaging delivers only the VSS webhook, and the
SIP code is a field of the Call Status (VCS) and Call Action (VCA) webhooks, not of the VSS: so
the emulator posts no call-status events for callflows, and the SIP code of a steered failure
is kept in the emulator's call record (``outcome``), not sent.

Guesses (8x8 documents none of these): the retry schedule and attempt timeout are the SMS
receipts' (1, 10, 30, 90 s); the header carries ``httpAuthHeader`` as given; ``lastAction`` is
the last action played before ``hangup`` (8x8's success example shows MAKE_CALL); an answered
call lasts as long as its speech at 2.5 words a second, times ``repetition``, over ``speed``
(or ``duration_s`` when a test steers it); ``callQuality`` is a fixed good line.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import phonenumbers

ANSWERED, NO_ANSWER, BUSY, FAILED, ERROR, NO_SUMMARY = "answered", "no-answer", "busy", "failed", "error", "none"
KINDS = (ANSWERED, NO_ANSWER, BUSY, FAILED, ERROR, NO_SUMMARY)
SESSION_STATUS = {ANSWERED: "COMPLETED", NO_ANSWER: "NO_ANSWER", BUSY: "BUSY", FAILED: "FAILED",
                  ERROR: "ERROR"}
# The final SIP code of each kind (RFC 3261, as 8x8's "SIP Response Codes" page explains them).
SIP_CODES = {ANSWERED: 200, NO_ANSWER: 480, BUSY: 486, FAILED: 503, ERROR: 500}
# 8x8's "Voice Error Codes" (VSS errorDetails).
ERROR_MESSAGES = {
    -2001: "An internal error has occurred", -2002: "An internal connectivity error has occurred",
    -2003: "The call flow provided is invalid", -2004: "No coverage available for requested area",
    -2005: "Unable to synthesize text to speech", -2006: "Unable to download file for playback",
    -2007: "The validity period of the call flow request has expired",
    -2008: "The provided source MSISDN or caller ID is not whitelisted",
    -2009: "The scenario parameters provided is invalid", -2010: "The trunk capacity has been exceeded",
    -9999: "An unknown error has occurred",
}
WORDS_PER_SECOND = 2.5
MAX_AFTER_MS = 10 * 60 * 1000
MAX_DURATION_S = 3600
CALL_QUALITY = {"mos": 4.5, "packetLossRate": 0, "jitter": 20}


@dataclass(frozen=True)
class VoiceOutcome:
    """What happens to calls to one destination: answered after ``after_ms`` and connected for
    ``duration_s`` (default: the time its speech takes), or no answer, busy, failed (with a
    ``sip_code``) or an 8x8 error (``error_code``) after ``after_ms``; ``none``: no summary."""

    kind: str = ANSWERED
    after_ms: int = 0
    duration_s: int | None = None
    sip_code: int | None = None
    error_code: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VoiceOutcome":
        kind = data.get("kind", ANSWERED)
        if kind not in KINDS:
            raise ValueError(f"unknown call outcome {kind!r}: use {', '.join(KINDS)}")
        after_ms = data.get("after_ms", 0)
        if isinstance(after_ms, bool) or not isinstance(after_ms, int) or not 0 <= after_ms <= MAX_AFTER_MS:
            raise ValueError(f"after_ms must be an integer from 0 to {MAX_AFTER_MS}")
        duration = data.get("duration_s")
        if duration is not None and (kind != ANSWERED or isinstance(duration, bool)
                                     or not isinstance(duration, int) or not 0 <= duration <= MAX_DURATION_S):
            raise ValueError(f"duration_s is for answered calls: an integer from 0 to {MAX_DURATION_S}")
        sip_code = data.get("sip_code")
        if kind == FAILED:
            sip_code = SIP_CODES[FAILED] if sip_code is None else sip_code
            if isinstance(sip_code, bool) or not isinstance(sip_code, int) or not 400 <= sip_code <= 699:
                raise ValueError("sip_code must be a SIP failure code from 400 to 699")
        elif sip_code is not None:
            raise ValueError("sip_code is for failed calls only")
        error_code = data.get("error_code")
        if kind == ERROR:
            error_code = -9999 if error_code is None else error_code
            if error_code not in ERROR_MESSAGES:
                raise ValueError(f"error_code must be one of 8x8's voice error codes {sorted(ERROR_MESSAGES)}")
        elif error_code is not None:
            raise ValueError("error_code is for error outcomes only")
        return cls(kind=kind, after_ms=after_ms, duration_s=duration, sip_code=sip_code, error_code=error_code)

    def duration(self, call: dict[str, Any]) -> int:
        """Seconds connected: 0 unless answered."""
        if self.kind != ANSWERED:
            return 0
        if self.duration_s is not None:
            return self.duration_s
        seconds = sum(len(say["text"].split()) / WORDS_PER_SECOND * say["repetition"] / say["speed"]
                      for say in call["says"])
        return max(1, math.ceil(seconds))

    def final_sip_code(self) -> int:
        if self.kind == FAILED and self.sip_code is not None:
            return self.sip_code
        return SIP_CODES.get(self.kind, 0)


def _timestamp(moment: dt.datetime) -> str:
    """8x8's session summary times: ``yyyy-MM-ddTHH:mm:ssZ``."""
    return f"{moment.astimezone(dt.timezone.utc):%Y-%m-%dT%H:%M:%S}Z"


def _region(digits: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse("+" + digits)) or "ZZ"
    except phonenumbers.NumberParseException:
        return "ZZ"


def session_summary(call: dict[str, Any], outcome: VoiceOutcome, started: dt.datetime) -> dict[str, Any]:
    """The VSS body for ``call`` (the emulator's record) placed at ``started`` with ``outcome``."""
    status = SESSION_STATUS[outcome.kind]
    verdict = started + dt.timedelta(milliseconds=outcome.after_ms)
    ended = verdict + dt.timedelta(seconds=outcome.duration(call))
    leg: dict[str, Any] = {
        "callId": call["callId"], "callDirection": "OUTBOUND", "callType": "PSTN",
        "initiatedTimestamp": _timestamp(started),
    }
    if outcome.kind == ANSWERED:
        leg["connectedTimestamp"] = _timestamp(verdict)
    leg.update({
        "disconnectedTimestamp": _timestamp(ended),
        "source": "+" + call["source"], "destination": "+" + call["destination"],
        "sourceFormat": "MSISDN", "destinationFormat": "MSISDN",
        "sourceCountryCode": _region(call["source"]), "destinationCountryCode": _region(call["destination"]),
        "sourceRefId": call["sourceRefId"], "callStatus": status, "callDuration": outcome.duration(call),
    })
    if outcome.kind == ANSWERED:
        leg["callQuality"] = dict(CALL_QUALITY)
    payload: dict[str, Any] = {
        "sessionId": call["sessionId"], "subAccountId": call["subaccount"], "sessionStatus": status,
        "startTime": _timestamp(started), "endTime": _timestamp(ended),
        "lastAction": call["lastAction"] if outcome.kind == ANSWERED else "MAKE_CALL", "callCount": 1,
    }
    if outcome.kind == ERROR and outcome.error_code is not None:
        payload["errorDetails"] = {"errorMsg": ERROR_MESSAGES[outcome.error_code], "errorCode": outcome.error_code}
    payload["details"] = {"callA": leg}
    return {"payload": payload, "namespace": "VOICE", "eventType": "SESSION_SUMMARY",
            "description": "Summary of a completed call session"}


def session_seconds(call: dict[str, Any], outcome: VoiceOutcome) -> tuple[float, float]:
    """(seconds until the verdict, seconds connected) of a session: when its summary is due."""
    return outcome.after_ms / 1000, float(outcome.duration(call))
