"""SMS conversion feedback ("SMS Success Feedback"), pure rules.

What 8x8 documents (``docs_oas/connect/sms_api.json``, operation ``api-Sms-Feedback``, schema
``feedback``/``SmsFeedback``; ``docs/connect/docs/tutorial-sms-feedback-api.md``; the ``track``
property of ``SmsRequest``):

- A send may carry ``track``: ``"Outcome"`` (track the conversion) or ``"None"`` (do not). Without
  it "there's no tracking unless subaccount has been configured for tracking beforehand".
- ``POST /api/v1/subaccounts/{subAccountId}/messages/{umid}/feedback`` with a JSON body
  ``{outcome: "success" | "failure" (required), timestamp?: date-time}``, the subaccount that
  sent the message. Success: HTTP 200 with no content. Documented errors: 400, 401, 500 with
  8x8's ``ErrorResponse``.
- "The Success Feedback API call should be made within 15 minutes of the original message being
  sent."

Where 8x8 is silent, the emulator takes the stricter answer (a client that copes with it copes
with 8x8), each a 4xx with 8x8's ``ErrorResponse``:

- A ``umid`` that is not a UUID: 400, code 1000 "Invalid umid." (the answer 8x8's other
  ``messages/{umid}`` operations document).
- An unknown ``umid``, or one another subaccount sent: 404, code 1300 "Message not found." (as
  the sibling operations document; the feedback operation lists no 404).
- A body that is not a JSON object, a missing or unknown ``outcome``, a property the schema does
  not name, a ``timestamp`` that is not an RFC 3339 date-time with an offset, or one before the
  message was sent or in the future: 400, code 1000.
- A message that was not tracked (no ``track: "Outcome"`` and no subaccount-wide tracking, or
  ``track: "None"``), or one 8x8 answered REJECTED (never sent): 400, code 1000.
- Later than 15 minutes after 8x8 accepted the message: 400, code 1000 (8x8 only says the data
  "may not accurately reflect your real conversion rate").
- A second feedback for the same message: 400, code 1000 (the first one counts).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

INVALID_PARAMETER = 1000
NOT_FOUND = 1300
OUTCOMES = ("success", "failure")
FIELDS = frozenset({"outcome", "timestamp"})
WINDOW = dt.timedelta(minutes=15)
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
# How far a client's timestamp may run ahead of 8x8's clock (not documented; a small allowance
# for clock skew, so a timestamp of "now" is never refused).
CLOCK_SKEW = dt.timedelta(seconds=5)

INVALID_UMID = "Invalid umid."
MESSAGE_NOT_FOUND = "Message not found."
NOT_TRACKED = "Message was not sent with track 'Outcome': no feedback expected"
NOT_SENT = "Message was rejected and never sent: no feedback expected"
TOO_LATE = "Feedback must be sent within 15 minutes of the message"
DUPLICATE = "Feedback was already received for this message"


@dataclass(frozen=True)
class Refused:
    status: int
    code: int
    message: str


@dataclass(frozen=True)
class Feedback:
    outcome: str
    timestamp: str | None


def tracked(track: str | None, subaccount_tracks: bool) -> bool:
    """Whether 8x8 tracks the conversion of a message sent with ``track`` (``None``: absent)."""
    if track is None:
        return subaccount_tracks
    return track == "Outcome"


def _parse(value: str) -> dt.datetime | None:
    if not _RFC3339.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def check_body(body: Any, sent_at: dt.datetime, now: dt.datetime) -> Feedback | Refused:
    """The feedback in ``body`` for a message 8x8 accepted at ``sent_at``."""
    if not isinstance(body, dict):
        return Refused(400, INVALID_PARAMETER, "Request body must be a JSON object")
    extra = sorted(set(body) - FIELDS)
    if extra:
        return Refused(400, INVALID_PARAMETER, f"Unknown field(s): {', '.join(extra)}")
    outcome = body.get("outcome")
    if outcome not in OUTCOMES:
        return Refused(400, INVALID_PARAMETER, "Invalid outcome: use success or failure")
    timestamp = body.get("timestamp")
    if timestamp is not None:
        moment = _parse(timestamp) if isinstance(timestamp, str) else None
        if moment is None:
            return Refused(400, INVALID_PARAMETER, "Invalid timestamp: use an ISO 8601 date-time with an offset")
        if moment < sent_at or moment > now + CLOCK_SKEW:
            return Refused(400, INVALID_PARAMETER, "Invalid timestamp: not between the message and now")
    return Feedback(outcome, timestamp)


def check_message(record: dict[str, Any], now: dt.datetime, already: bool) -> Refused | None:
    """Why the message ``record`` takes no feedback at ``now`` (``already``: it had some)."""
    if record["status"]["code"] != "QUEUED":
        return Refused(400, INVALID_PARAMETER, NOT_SENT)
    if not record.get("tracked"):
        return Refused(400, INVALID_PARAMETER, NOT_TRACKED)
    if now - dt.datetime.fromisoformat(record["acceptedAt"]) > WINDOW:
        return Refused(400, INVALID_PARAMETER, TOO_LATE)
    if already:
        return Refused(400, INVALID_PARAMETER, DUPLICATE)
    return None
