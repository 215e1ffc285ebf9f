"""Pure validation of 8x8 send requests, as the public SMS API documents it.

Error codes follow 8x8's docs: 1001 illegal subaccount, 1002 invalid MSISDN, 1003 invalid
encoding, 1005 invalid source, 1100 bulk limit, 1200 unauthorized, 1201 forbidden, 3009
clientMessageId too long, 2000 internal. 8x8 documents no code for a body that is not JSON or
lacks ``text``; the emulator answers those with 1000 (an assumption, marked as such).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SUBACCOUNT_ID = re.compile(r"^[A-Za-z0-9\-._&]{3,50}$")
DESTINATION = re.compile(r"^\+?[1-9][0-9]{6,14}$")
ENCODINGS = frozenset({"AUTO", "GSM7", "UCS2"})
MAX_SOURCE = 16
MAX_CLIENT_MESSAGE_ID = 50
MAX_BATCH = 10_000

INVALID_REQUEST = 1000  # emulator assumption: undocumented code for a malformed body
ILLEGAL_SUBACCOUNT = 1001
INVALID_MSISDN = 1002
INVALID_ENCODING = 1003
INVALID_SOURCE = 1005
BULK_LIMIT = 1100
UNAUTHORIZED = 1200
FORBIDDEN = 1201
CLIENT_MESSAGE_ID_TOO_LONG = 3009
INTERNAL = 2000


@dataclass(frozen=True)
class Invalid:
    """A request 8x8 refuses with HTTP ``status`` and error ``code``."""

    status: int
    code: int
    message: str


def check_message(body: Any) -> Invalid | None:
    """Validate one message object; ``None`` when 8x8 would accept it."""
    if not isinstance(body, dict):
        return Invalid(400, INVALID_REQUEST, "Request body must be a JSON object")
    destination = body.get("destination")
    if not isinstance(destination, str) or not DESTINATION.match(destination):
        return Invalid(400, INVALID_MSISDN, "Invalid MSISDN")
    text = body.get("text")
    if not isinstance(text, str) or not text:
        return Invalid(400, INVALID_REQUEST, "Field 'text' is required")
    encoding = body.get("encoding", "AUTO")
    if encoding not in ENCODINGS:
        return Invalid(400, INVALID_ENCODING, "Invalid encoding")
    source = body.get("source")
    if source is not None and (not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE):
        return Invalid(400, INVALID_SOURCE, "Invalid source")
    client_message_id = body.get("clientMessageId")
    if client_message_id is not None and (
        not isinstance(client_message_id, str) or len(client_message_id) > MAX_CLIENT_MESSAGE_ID
    ):
        return Invalid(400, CLIENT_MESSAGE_ID_TOO_LONG, "clientMessageId is too long")
    return None


def batch_messages(body: Any) -> list[Any] | Invalid:
    """Expand a batch body (``messages`` or ``destinations`` + ``template``) into messages."""
    if not isinstance(body, dict):
        return Invalid(400, INVALID_REQUEST, "Request body must be a JSON object")
    template = body.get("template") or {}
    if not isinstance(template, dict):
        return Invalid(400, INVALID_REQUEST, "Field 'template' must be an object")
    if isinstance(body.get("messages"), list):
        items = [{**template, **m} if isinstance(m, dict) else m for m in body["messages"]]
    elif isinstance(body.get("destinations"), list):
        items = [{**template, "destination": d} for d in body["destinations"]]
    else:
        return Invalid(400, INVALID_REQUEST, "Either 'messages' or 'destinations' is required")
    if not items:
        return Invalid(400, INVALID_REQUEST, "The batch is empty")
    if len(items) > MAX_BATCH:
        return Invalid(400, BULK_LIMIT, f"A batch holds at most {MAX_BATCH} messages")
    return items
