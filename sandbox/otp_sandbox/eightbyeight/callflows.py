"""Pure validation of 8x8 Voice Messaging requests (``POST .../subaccounts/{id}/callflows``), as
8x8's OpenAPI file for the Voice API (``docs_oas/connect/voice_v1_api.json``), its Voice
Messaging guide and its "Voice Status Codes" page document them.

Every refusal is a ``CallflowErrorResponse``: ``sessionStatus`` NOT_CREATED, a new
``callFlowRequestId``, 8x8's negative ``statusCode`` and its ``statusMessage``.

What the documents say, and the emulator enforces:

- ``callflow`` is required, an array of actions ``makeCall``, ``say``, ``playFile``,
  ``sayAndCapture``, ``hangup`` (-1007 for any other); the first is ``makeCall`` (-1013); at most
  two ``makeCall`` (-1010); ``hangup`` only last (-1012).
- ``makeCall`` needs ``source`` and ``destination`` and nothing else (``maxProperties`` 2); the
  destination an E.164 number, "+" optional (-1017); the source a caller ID 8x8 whitelisted for
  the subaccount (-1014, "CLID whitelisting is mandatory").
- ``say`` needs ``text`` (at most 3000 characters) and ``voiceProfile`` (a speech profile of the
  account, -1002); ``repetition`` 1, 2 or 3 (default 1); ``speed`` from 0.5 to 2 (default 1).
- ``playFile`` needs an http(s) ``fileUrl``; ``repetition`` 1 to 3.
- ``validUntil`` an ISO 8601 time; already past: -1015.

Where the documents are silent (the emulator's choices, each the stricter one):

- HTTP status: the spec shows 400 for a malformed entry (-1007) and 422 for a callflow that is
  well-formed but wrong (-1013). The emulator answers 400 for the malformed kinds (-1001, -1002,
  -1007, -1009, -1017) and 422 for the callflow and permission kinds (-1010, -1012 to -1015).
- A field the schema does not name, a wrong JSON type, an empty ``text``, a ``repetition`` or
  ``speed`` out of range and a ``text`` over 3000 characters are -1009 "Invalid call flow entry
  provided" with the JSON path (the form of 8x8's own -1009 example). ``speed`` is typed integer
  in the spec but documented from 0.5 to 2: any JSON number in that range is taken.
- ``clientActionId`` (a top-level string) is not in the OpenAPI request schema but in 8x8's
  makeCall and IVR pages: it is accepted as an optional string and recorded.
- Not modelled: bridging a second ``makeCall`` (the relay never bridges) and ``sayAndCapture``
  (DTMF needs the Voice Call Action webhook): both are refused with 422 and -9999 naming that the
  emulator does not model them, rather than accepted and silently not done.
- Speech profiles: 8x8 lists them per account (``GET .../speech-profiles``) and publishes no
  complete list. The emulator knows the profiles 8x8's own documents name (``SPEECH_PROFILES``);
  tests add others through the admin API.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import rules

ACTIONS = ("makeCall", "say", "sayAndCapture", "playFile", "hangup")
MAX_MAKE_CALLS = 2
MAX_TEXT = 3000
REPETITIONS = (1, 2, 3)
SPEED_RANGE = (0.5, 2.0)
TOP_LEVEL = frozenset({"callflow", "validUntil", "clientActionId"})
PARAMS = {
    "makeCall": (frozenset({"source", "destination"}), ("source", "destination")),
    "say": (frozenset({"text", "voiceProfile", "repetition", "speed"}), ("text", "voiceProfile")),
    "playFile": (frozenset({"fileUrl", "repetition"}), ("fileUrl",)),
    "sayAndCapture": (frozenset({"promptMessage", "voiceProfile", "speed", "minDigits", "maxDigits",
                                 "digitTimeout", "overallTimeout", "completeOnHash", "noOfTries",
                                 "successMessage", "failureMessage"}), ("promptMessage", "voiceProfile")),
}

CREATED, NOT_CREATED = "CREATED", "NOT_CREATED"
OK_CODE, OK_MESSAGE = 1, "Created"
INVALID_JSON = -1001
INVALID_PROFILE = -1002
INVALID_ACTION = -1007
INVALID_ENTRY = -1009
TOO_MANY_ACTIONS = -1010
HANGUP_MISUSED = -1012
FIRST_NOT_MAKE_CALL = -1013
SOURCE_NOT_ALLOWED = -1014
EXPIRED = -1015
INVALID_DESTINATION = -1017
UNKNOWN = -9999
MESSAGES = {
    INVALID_JSON: "Invalid JSON request body",
    INVALID_PROFILE: "Speech profile or language parameter invalid",
    INVALID_ACTION: "Invalid action type was used. Accepted action type is "
                    "[say, sayAndcapture, makeCall, hangup, playFile]",
    INVALID_ENTRY: "Invalid call flow entry provided.",
    TOO_MANY_ACTIONS: "Some actions are provided beyond the allowed count",
    HANGUP_MISUSED: "Invalid Callflow : Incorrect use of action Hangup",
    FIRST_NOT_MAKE_CALL: "Invalid Callflow : First action should be a MakeCall action",
    SOURCE_NOT_ALLOWED: "Source or caller ID is not allowed",
    EXPIRED: "The validity period of the call flow request has expired",
    INVALID_DESTINATION: "Invalid MSISDN format in Destination",
    UNKNOWN: "An unknown error has occurred.",
}
_HTTP_STATUS = {TOO_MANY_ACTIONS: 422, HANGUP_MISUSED: 422, FIRST_NOT_MAKE_CALL: 422,
                SOURCE_NOT_ALLOWED: 422, EXPIRED: 422, UNKNOWN: 422}

# The speech profiles 8x8's documents name (OpenAPI examples, Voice Messaging and IVR guides):
# (speechProfileCode, localeCode, localeDescription, gender). 8x8 gives no gender for most.
SPEECH_PROFILES = (
    ("en-GB-Emma", "en-GB", "EnglishUK", "F"),
    ("en-US-Standard-A", "en-US", "EnglishUS", "F"),
    ("da-DK-Naja", "da-DK", "Danish", "F"),
    ("en-IE-EmilyNeural", "en-IE", "EnglishIreland", "F"),
    ("en-US-ZiraRUS", "en-US", "EnglishUS", "F"),
    ("en-US-BenjaminRUS", "en-US", "EnglishUS", "M"),
    ("en-US-Neural2-C", "en-US", "EnglishUS", "F"),
)
PROFILE_CODE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}-[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Refused:
    """A callflow 8x8 does not create: HTTP ``http_status``, 8x8 ``code`` and ``message``."""

    code: int
    detail: str = ""

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 400)

    @property
    def message(self) -> str:
        return f"{MESSAGES[self.code]} {self.detail}".strip()


@dataclass(frozen=True)
class Say:
    text: str
    voice_profile: str
    repetition: int = 1
    speed: float = 1


@dataclass(frozen=True)
class Callflow:
    """A callflow 8x8 accepts: the call it places and what it plays (numbers in E.164 digits)."""

    source: str
    destination: str
    actions: tuple[dict[str, Any], ...]  # as sent, defaults filled in
    says: tuple[Say, ...] = ()
    valid_until: str | None = None  # 8x8's YYYY-MM-DDTHH:MM:SS.sssZ
    client_action_id: str | None = None
    hangup: bool = False

    @property
    def last_action(self) -> str:
        """The last action before ``hangup``, as the session summary names it (MAKE_CALL...)."""
        played = [a["action"] for a in self.actions if a["action"] != "hangup"]
        return re.sub(r"(?<!^)([A-Z])", r"_\1", played[-1]).upper()


def _entry(detail: str) -> Refused:
    return Refused(INVALID_ENTRY, detail)


def _number(value: object, minimum: float, maximum: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and minimum <= value <= maximum)


def _params(index: int, action: dict[str, Any]) -> dict[str, Any] | Refused:
    """The action's params, checked against the names and required fields of its schema."""
    name, path = action["action"], f"$.callflow[{index}]"
    extra = set(action) - {"action", "params"}
    if extra:
        return _entry(f"{path}.{sorted(extra)[0]}: is not defined in the schema")
    if name == "hangup":
        if "params" in action:
            return _entry(f"{path}.params: is not defined in the schema")
        return {}
    params = action.get("params")
    if not isinstance(params, dict):
        return _entry(f"{path}.params: is missing but it is required")
    allowed, required = PARAMS[name]
    for key in required:
        if key not in params:
            return _entry(f"{path}.params.{key}: is missing but it is required")
    for key in params:
        if key not in allowed:
            return _entry(f"{path}.params.{key}: is not defined in the schema")
    for key in ("source", "destination", "text", "voiceProfile", "fileUrl", "promptMessage"):
        if key in params and not isinstance(params[key], str):
            return _entry(f"{path}.params.{key}: string expected")
    repetition = params.get("repetition", 1)
    if isinstance(repetition, bool) or repetition not in REPETITIONS:
        return _entry(f"{path}.params.repetition: must be 1, 2 or 3")
    if "speed" in params and not _number(params["speed"], *SPEED_RANGE):
        return _entry(f"{path}.params.speed: must be from 0.5 to 2")
    if name == "say" and not params["text"]:
        return _entry(f"{path}.params.text: must not be empty")
    if name == "say" and len(params["text"]) > MAX_TEXT:
        return _entry(f"{path}.params.text: may only be {MAX_TEXT} characters long")
    if name == "playFile" and urlsplit(params["fileUrl"]).scheme not in ("http", "https"):
        return _entry(f"{path}.params.fileUrl: must be an http or https URL")
    return params


def _valid_until(value: object, now: dt.datetime) -> str | Refused | None:
    if value is None:
        return None
    moment = rules.parse_time(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    if moment is None:
        return _entry("$.validUntil: must be a date-time (YYYY-MM-DDTHH:MM:SS.SSSZ)")
    if moment <= now:
        return Refused(EXPIRED)
    moment = moment.astimezone(dt.timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def check_callflow(body: Any, caller_ids: set[str], profiles: set[str],
                   now: dt.datetime | None = None) -> Callflow | Refused:
    """Validate a callflows request for a subaccount whose whitelisted caller IDs (E.164 digits)
    are ``caller_ids`` and whose speech profiles are ``profiles``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if not isinstance(body, dict):
        return Refused(INVALID_JSON)
    extra = set(body) - TOP_LEVEL
    if extra:
        return _entry(f"$.{sorted(extra)[0]}: is not defined in the schema")
    if "clientActionId" in body and not isinstance(body["clientActionId"], str):
        return _entry("$.clientActionId: string expected")
    flow = body.get("callflow")
    if not isinstance(flow, list) or not flow:
        return _entry("$.callflow: is missing but it is required" if flow is None
                      else "$.callflow: a non-empty array expected")
    actions: list[dict[str, Any]] = []
    for index, action in enumerate(flow):
        if not isinstance(action, dict) or action.get("action") not in ACTIONS:
            return Refused(INVALID_ACTION, f"$.callflow[{index}].action")
        params = _params(index, action)
        if isinstance(params, Refused):
            return params
        actions.append({"action": action["action"], **({"params": params} if params else {})})
    names = [a["action"] for a in actions]
    if names[0] != "makeCall":
        return Refused(FIRST_NOT_MAKE_CALL)
    if names.count("makeCall") > MAX_MAKE_CALLS:
        return Refused(TOO_MANY_ACTIONS)
    if "hangup" in names[:-1]:
        return Refused(HANGUP_MISUSED)
    call = actions[0]["params"]
    destination = rules.e164(call["destination"], None)
    if destination is None:
        return Refused(INVALID_DESTINATION)
    source = call["source"].removeprefix("+")
    if source not in caller_ids:
        return Refused(SOURCE_NOT_ALLOWED)
    for action in actions:
        if "voiceProfile" in action.get("params", {}) and action["params"]["voiceProfile"] not in profiles:
            return Refused(INVALID_PROFILE)
    valid_until = _valid_until(body.get("validUntil"), now)
    if isinstance(valid_until, Refused):
        return valid_until
    if names.count("makeCall") > 1:
        return Refused(UNKNOWN, "(the 8x8 emulator does not model bridged calls)")
    if "sayAndCapture" in names:
        return Refused(UNKNOWN, "(the 8x8 emulator does not model sayAndCapture)")
    says = tuple(Say(a["params"]["text"], a["params"]["voiceProfile"], a["params"].get("repetition", 1),
                     a["params"].get("speed", 1)) for a in actions if a["action"] == "say")
    return Callflow(source=source, destination=destination, actions=tuple(actions), says=says,
                    valid_until=valid_until, client_action_id=body.get("clientActionId"),
                    hangup=names[-1] == "hangup")


__all__ = ["Callflow", "Refused", "Say", "SPEECH_PROFILES", "check_callflow"]
