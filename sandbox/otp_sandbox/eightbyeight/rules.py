r"""Pure validation of 8x8 send requests, as 8x8's OpenAPI file for the SMS API
(``docs_oas/connect/sms_api.json``) and its "API Error codes" page document them.

A single send answers every problem with HTTP 400 and the documented error code. A batch
answers 400 only for problems with the request as a whole (not JSON, no messages, too many,
a field of the wrong type or outside its enum/length); the per-message problems the spec lists
for batches (text missing or over 10 parts, source too long, expiry reached, invalid MSISDN)
make that message ``REJECTED`` inside a 200 answer instead.

Assumptions where 8x8 documents no answer: a body that is not JSON or not ``application/json``
(the spec accepts only that), a field of the wrong JSON type and an unknown ``track`` value get
400 with 1000 "Invalid parameter". A key that belongs to another subaccount gets 400 with 1001
(the spec documents only 400 and 401 for a send, and 1001 is "Illegal SubAccountId"), not 403.

Numbers: the spec asks for ``^\+?[1-9][0-9]{6,14}$`` and an "E.164 international number". Its own
example request sends to ``6500000000`` (a Singapore number no operator has assigned) and its
answer examples refuse ``+1123456789`` (a North American number one digit short). So a number
is valid when libphonenumber calls it *possible* (the right length for its country), not
*valid* (assigned ranges): that accepts the example request and refuses the example refusal.
Two answer examples still disagree with any length rule (``659876002`` queued, one digit short;
``+12025550127`` refused, a fine length), and they disagree with each other: they are left as
examples, not rules.

Text length: 8x8's "Send SMS API" page says a text longer than 10 parts is truncated to 10 parts
and sent, so a single send is truncated (the record holds the text the handset gets). The batch
answer documents a REJECTED "Invalid Text value. Reached max allowed limit" without naming the
limit: the emulator takes the same 10 parts as that limit (the stricter reading), so a batch
message over 10 parts is REJECTED, not truncated.

TLS: 8x8's 426 answer (code 1014, header ``Upgrade: TLS/1.3``) documents that Singapore-bound
messages need TLS 1.3 or later. That is the only destination rule the spec names: other
destinations are accepted over TLS 1.2, and anything older than 1.2 is refused at the handshake
(the spec is silent; the stricter choice). A batch with any Singapore-bound message over TLS 1.2
fails as a whole with 426 (the spec lists 426 for the batch request, not a per-message reason).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import phonenumbers

SUBACCOUNT_ID = re.compile(r"^[A-Za-z0-9\-._&]{3,50}$")
DESTINATION = re.compile(r"^\+?[1-9][0-9]{6,14}$")
COUNTRY = re.compile(r"^[A-Za-z]{2}$")
ENCODINGS = frozenset({"AUTO", "GSM7", "UCS2"})
TRACKS = frozenset({"None", "Outcome"})
MAX_SOURCE = 16
MAX_CLIENT_MESSAGE_ID = 350
MAX_CLIENT_BATCH_ID = 20
MAX_BATCH = 10_000
MAX_PARTS = 10  # longer texts are truncated to 10 parts ("Send SMS API" page)
GSM7_UNITS, UCS2_UNITS = (160, 153), (70, 67)  # (alone, per part when split)
TLS13_COUNTRY_CODES = frozenset({65})  # "TLS 1.3+ is required for Singapore-bound messages"
MAX_SCHEDULE_AHEAD = dt.timedelta(days=7)

INVALID_PARAMETER = 1000
ILLEGAL_SUBACCOUNT = 1001
INVALID_MSISDN = 1002
INVALID_ENCODING = 1003
INVALID_TEXT = 1004
INVALID_SOURCE = 1005
INVALID_EXPIRY = 1006
INVALID_TEMPLATE = 1007
INVALID_COUNTRY = 1009
INVALID_SCHEDULE = 1011
INVALID_IP = 1012
INSECURE_PROTOCOL = 1014
BULK_LIMIT = 1100
UNAUTHORIZED = 1200
INTERNAL = 2000
CLIENT_MESSAGE_ID_TOO_LONG = 3009
MISSED_MESSAGES = 3012
CLIENT_BATCH_ID_TOO_LONG = 3014
INVALID_CALLBACK_URL = 3020

# The REJECTED descriptions the spec lists for batch messages.
TEXT_MISSING = "Text value is missing"
TEXT_TOO_LONG = "Invalid Text value. Reached max allowed limit"
SOURCE_TOO_LONG = "Invalid Source value. Reached max allowed limit"
EXPIRY_REACHED = "Expiry time already reached"
MSISDN_NOT_E164 = "Invalid MSISDN format (not E.164 international number)"

_STRING_FIELDS = ("destination", "text", "source", "clientMessageId", "country", "encoding",
                  "scheduled", "expiry", "dlrCallbackUrl", "clientIp", "track")


@dataclass(frozen=True)
class Invalid:
    """A problem 8x8 answers with HTTP 400, error ``code`` and ``message``.

    ``per_message``: in a batch, the message is REJECTED with ``message`` as its description
    instead of the whole request failing.
    """

    code: int
    message: str
    per_message: bool = False


@dataclass(frozen=True)
class Message:
    """A message 8x8 accepts, normalised as 8x8 reports it."""

    destination: str  # E.164 digits without the "+"
    text: str
    encoding: str  # GSM7 or UCS2, never AUTO
    sms_count: int
    source: str | None
    client_message_id: str | None
    client_ip: str | None
    country: str | None
    scheduled: str | None
    expiry: str | None
    dlr_callback_url: str | None
    track: str | None = None  # as given: "Outcome", "None" or absent (feedback.tracked)


def detect_encoding(text: str, requested: str = "AUTO") -> str:
    """GSM7 when every character is in the GSM 03.38 alphabet (or GSM7 was asked), else UCS2."""
    if requested != "AUTO":
        return requested
    try:
        text.encode("gsm03.38")
    except UnicodeEncodeError:
        return "UCS2"
    return "GSM7"


def _units(char: str, encoding: str) -> int:
    """Septets (GSM7: extension characters take two) or UTF-16 code units (UCS2) of ``char``."""
    if encoding == "GSM7":
        return len(char.encode("gsm03.38", errors="replace"))
    return len(char.encode("utf-16-le")) // 2


def parts(text: str, encoding: str) -> int:
    """Segments the whole text needs (no cap): GSM7 160 septets alone, 153 per part when split;
    UCS2 70 units alone, 67 per part."""
    single, part = GSM7_UNITS if encoding == "GSM7" else UCS2_UNITS
    if encoding == "GSM7":
        units = len(text.encode("gsm03.38", errors="replace"))
    else:
        units = len(text.encode("utf-16-le")) // 2
    return max(1, 1 if units <= single else math.ceil(units / part))


def sms_count(text: str, encoding: str) -> int:
    """Segments billed for ``text``: at most 10 (longer texts are truncated)."""
    return min(MAX_PARTS, parts(text, encoding))


def truncate(text: str, encoding: str) -> str:
    """The first 10 parts of ``text`` (what 8x8 sends of a longer text); ``text`` when it fits.

    A character never straddles two parts here (a GSM7 extension or a UTF-16 surrogate pair
    that would not fit is left out whole)."""
    if parts(text, encoding) <= MAX_PARTS:
        return text
    budget, used = MAX_PARTS * (GSM7_UNITS if encoding == "GSM7" else UCS2_UNITS)[1], 0
    for index, char in enumerate(text):
        used += _units(char, encoding)
        if used > budget:
            return text[:index]
    return text


def e164(destination: str, country: str | None) -> str | None:
    """The number in E.164 digits (no "+") when it is a possible number (the right length for
    its country; see the module docstring), else None.

    8x8 takes international numbers with or without "+", and national ones with ``country``.
    """
    if not DESTINATION.match(destination):
        return None
    attempts: list[tuple[str, str | None]] = []
    if country and not destination.startswith("+"):
        attempts.append((destination, country.upper()))
    attempts.append(("+" + destination.lstrip("+"), None))
    for number, region in attempts:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number_with_reason(parsed) == phonenumbers.ValidationResult.IS_POSSIBLE:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)[1:]
    return None


def needs_tls13(destination: str) -> bool:
    """Whether 8x8 refuses a message to ``destination`` (E.164 digits) sent over TLS 1.2.

    Country calling codes are prefix-free, so the leading digits name the country."""
    return any(destination.startswith(str(code)) for code in TLS13_COUNTRY_CODES)


def insecure_protocol(destinations: list[str], tls_version: str | None) -> Invalid | None:
    """The 426 problem when a destination needs TLS 1.3 and the request came over less."""
    if tls_version in (None, "TLSv1.3"):
        return None
    if any(needs_tls13(d) for d in destinations):
        return Invalid(INSECURE_PROTOCOL, f"TLS 1.3+ is required for Singapore-bound messages. "
                                          f"Detected: {tls_version}")
    return None


def parse_time(value: str) -> dt.datetime | None:
    """An ISO 8601 date-time (naive means UTC), or None."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def valid_callback_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _request_problem(item: dict[str, Any], now: dt.datetime) -> Invalid | None:
    """Problems that fail the whole request, batch or not."""
    for name in _STRING_FIELDS:
        if name in item and not isinstance(item[name], str):
            return Invalid(INVALID_PARAMETER, f"Field '{name}' must be a string")
    if item.get("encoding", "AUTO") not in ENCODINGS:
        return Invalid(INVALID_ENCODING, "Invalid encoding: use AUTO, GSM7 or UCS2")
    if len(item.get("clientMessageId", "")) > MAX_CLIENT_MESSAGE_ID:
        return Invalid(CLIENT_MESSAGE_ID_TOO_LONG, "Too long ClientMessageId")
    if "country" in item and not COUNTRY.match(item["country"]):
        return Invalid(INVALID_COUNTRY, "Invalid Country Code")
    if "clientIp" in item and not _valid_ip(item["clientIp"]):
        return Invalid(INVALID_IP, "Invalid Ip Address")
    if "dlrCallbackUrl" in item and not valid_callback_url(item["dlrCallbackUrl"]):
        return Invalid(INVALID_CALLBACK_URL, "Invalid DR Callback URL")
    if "track" in item and item["track"] not in TRACKS:
        return Invalid(INVALID_PARAMETER, "Invalid track: use None or Outcome")
    if "expiry" in item and parse_time(item["expiry"]) is None:
        return Invalid(INVALID_EXPIRY, "Invalid Expiry")
    if "scheduled" in item:
        scheduled = parse_time(item["scheduled"])
        if scheduled is None or scheduled > now + MAX_SCHEDULE_AHEAD:
            return Invalid(INVALID_SCHEDULE, "Invalid Schedule Time")
    return None


def _message_problem(item: dict[str, Any], now: dt.datetime, batch: bool) -> Invalid | str:
    """Problems that REJECT one message of a batch; else the destination in E.164 digits."""
    if not item.get("text"):
        return Invalid(INVALID_TEXT, TEXT_MISSING, per_message=True)
    if batch and parts(item["text"], detect_encoding(item["text"], item.get("encoding", "AUTO"))) > MAX_PARTS:
        return Invalid(INVALID_TEXT, TEXT_TOO_LONG, per_message=True)
    if len(item.get("source", "")) > MAX_SOURCE:
        return Invalid(INVALID_SOURCE, SOURCE_TOO_LONG, per_message=True)
    expiry = parse_time(item["expiry"]) if "expiry" in item else None
    if expiry is not None and expiry <= now:
        return Invalid(INVALID_EXPIRY, EXPIRY_REACHED, per_message=True)
    destination = e164(item.get("destination", ""), item.get("country"))
    if destination is None:
        return Invalid(INVALID_MSISDN, MSISDN_NOT_E164, per_message=True)
    return destination


def check_message(item: Any, now: dt.datetime | None = None, batch: bool = False) -> Message | Invalid:
    """One message object (a single send, or a batch message with its template merged in).

    The text is truncated to 10 parts in a single send; in a batch a longer text is REJECTED."""
    if not isinstance(item, dict):
        return Invalid(INVALID_PARAMETER, "Each message must be a JSON object")
    now = now or dt.datetime.now(dt.timezone.utc)
    problem = _request_problem(item, now)
    if problem is not None:
        return problem
    destination = _message_problem(item, now, batch)
    if isinstance(destination, Invalid):
        return destination
    encoding = detect_encoding(item["text"], item.get("encoding", "AUTO"))
    text = truncate(item["text"], encoding)
    return Message(
        destination=destination, text=text, encoding=encoding, sms_count=sms_count(text, encoding),
        source=item.get("source"), client_message_id=item.get("clientMessageId"),
        client_ip=item.get("clientIp"), country=item.get("country"), scheduled=item.get("scheduled"),
        expiry=item.get("expiry"), dlr_callback_url=item.get("dlrCallbackUrl"), track=item.get("track"),
    )


def batch_messages(body: Any) -> list[Any] | Invalid:
    """Expand a batch body into message objects, the template merged into each.

    ``messages`` wins over ``destinations`` when both are given, as the spec says.
    """
    if not isinstance(body, dict):
        return Invalid(INVALID_PARAMETER, "Request body must be a JSON object")
    template = body.get("template", {})
    if not isinstance(template, dict):
        return Invalid(INVALID_TEMPLATE, "Invalid SMS Template")
    if "track" in template:  # SmsTemplateFull has no track (only SmsRequest): refused, the stricter choice
        return Invalid(INVALID_TEMPLATE, "Invalid SMS Template: track is set per message")
    client_batch_id = body.get("clientBatchId")
    if client_batch_id is not None and (not isinstance(client_batch_id, str)
                                        or len(client_batch_id) > MAX_CLIENT_BATCH_ID):
        return Invalid(CLIENT_BATCH_ID_TOO_LONG, "Too long ClientBatchId")
    messages, destinations = body.get("messages"), body.get("destinations")
    if isinstance(messages, list) and messages:
        items = [{**template, **m} if isinstance(m, dict) else m for m in messages]
    elif isinstance(destinations, list) and destinations:
        items = [{**template, "destination": d} for d in destinations]
    else:
        return Invalid(MISSED_MESSAGES, "Missed messages: give 'messages' or 'destinations'")
    if len(items) > MAX_BATCH:
        return Invalid(BULK_LIMIT, f"Bulk limit reached: at most {MAX_BATCH} messages")
    return items
