"""The relay's request body: parsed and validated, never trusted.

Pure: bytes in, an ``OtpRequest`` or a ``Problem`` out. Details never echo the code, the text
or the number.
"""

from __future__ import annotations

import html
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson
import phonenumbers

from .config import valid_locale
from .problems import Problem
from .state import idempotency_key, valid_key

DELIVERY_METHODS = frozenset({"text", "voice"})
MAX_TEXT = 1600  # characters; 8x8 splits long texts, an OTP never needs more
NUMBER_CACHE = 8192  # recipients whose parse is remembered (bounded: clients choose them)


@dataclass(frozen=True, slots=True)
class OtpRequest:
    recipient: str  # E.164
    country: str  # ISO 3166 alpha-2 region of the number
    text: str
    message_type: str
    client_ip: str | None
    idempotency_key: str  # as sent (64 lowercase hex) or derived the same way
    number_type: str = "UNKNOWN"  # libphonenumber's PhoneNumberType name
    calling_code: int = 0
    delivery: str = "text"  # "text" (an SMS) or "voice" (a text-to-speech call)
    locale: str | None = None  # Auth0's, when well-formed (picks the call's voice)
    subject: str | None = None  # HMAC-SHA256(signing key, Auth0 user id), hex: matches log events


def _bad(detail: str) -> Problem:
    return Problem(400, "Invalid request", detail)


def _optional_str(body: dict, name: str) -> str | None | Problem:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    return _bad(f"'{name}' must be a string")


_MARKUP = re.compile(r"<[^<>]{0,512}>")  # a TwiML/SSML tag (bounded: clients write the text)
_SPACES = re.compile(r"\s+")
_SUBJECT = re.compile(r"^[0-9a-f]{64}$")


def spoken(text: str) -> str:
    """The words a call reads from Auth0's voice text: Auth0 may hand it wrapped in markup
    (``<Response><Say>...</Say></Response>``, SSML), which 8x8's ``say`` would read out
    literally; tags are dropped, XML entities decoded, white space collapsed."""
    return _SPACES.sub(" ", html.unescape(_MARKUP.sub(" ", text))).strip()


VOICE_DISABLED = Problem(422, "Delivery method not supported",
                         "voice delivery is not configured on this channel; use 'text'")


def parse(raw: bytes, voice: bool = False) -> OtpRequest | Problem:
    """``voice``: whether this relay places calls (else a voice message is a 422)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _bad("body is not valid JSON")
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")

    recipient = body.get("recipient")
    if not isinstance(recipient, str) or not recipient:
        return _bad("'recipient' is required and must be a string")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return _bad("'text' is required and must be a non-empty string")
    if len(text) > MAX_TEXT:
        return _bad(f"'text' is longer than {MAX_TEXT} characters")
    message_type = body.get("message_type")
    if not isinstance(message_type, str) or not message_type:
        return _bad("'message_type' is required and must be a string")
    delivery = body.get("delivery_method")
    if not isinstance(delivery, str) or delivery not in DELIVERY_METHODS:
        return _bad("'delivery_method' must be 'text' or 'voice'")
    for name in ("code", "locale", "idempotency_key"):
        checked = _optional_str(body, name)
        if isinstance(checked, Problem):
            return checked
    key = body.get("idempotency_key")
    if key is not None and not valid_key(key):
        return _bad("'idempotency_key' must be 64 lowercase hex characters")
    client_ip = _optional_str(body, "client_ip")
    if isinstance(client_ip, Problem):
        return client_ip
    if client_ip is not None:
        try:
            client_ip = str(ipaddress.ip_address(client_ip))
        except ValueError:
            return _bad("'client_ip' is not an IP address")

    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not _SUBJECT.match(subject)):
        return Problem(422, "Invalid request", "'subject' must be 64 lowercase hex characters "
                       "(HMAC-SHA256 of the user id under the signing key) or absent")

    classified = _classify(recipient)
    if isinstance(classified, Problem):
        return classified
    country, number_type, calling_code = classified
    if delivery == "voice" and not voice:
        return VOICE_DISABLED
    locale = body.get("locale")
    words = text
    if delivery == "voice":
        words = spoken(text)
        if not words:
            return _bad("'text' has nothing to say once its markup is removed")
    return OtpRequest(
        recipient=recipient,
        country=country,
        text=words,
        message_type=message_type,
        client_ip=client_ip,
        idempotency_key=key or idempotency_key(recipient, body.get("code"), message_type, text),
        number_type=number_type,
        calling_code=calling_code,
        delivery=delivery,
        locale=locale if valid_locale(locale) else None,  # a malformed one: the default voice
        subject=subject,
    )


_TYPE_NAMES = {value: name for name, value in vars(phonenumbers.PhoneNumberType).items()
               if isinstance(value, int)}


@lru_cache(maxsize=NUMBER_CACHE)
def _classify(recipient: str) -> tuple[str, str, int] | Problem:
    """(region, number type, calling code) of a valid E.164 ``recipient`` (parsing is the
    costliest check of a request, and OTP traffic repeats numbers: a bounded cache answers
    repeats). The region of a non-geographic number is "001"."""
    number = _e164(recipient)
    if isinstance(number, Problem):
        return number
    return (phonenumbers.region_code_for_number(number) or "ZZ",
            _TYPE_NAMES.get(phonenumbers.number_type(number), "UNKNOWN"), number.country_code or 0)


def invalid_number(recipient: str) -> str | None:
    """Why ``recipient`` would be refused as a send's recipient (the detail), or None."""
    found = _e164(recipient)
    return found.detail if isinstance(found, Problem) else None


def _e164(recipient: str) -> phonenumbers.PhoneNumber | Problem:
    """The number if ``recipient`` is a valid number written exactly in E.164.

    E.164 is "+", a country code and the national number, digits only; building the number
    from those parts skips ``phonenumbers.parse``'s search through every human notation (the
    slowest step of a request). The library still decides the country code and validity, and
    the number must format back to exactly ``recipient``.
    """
    digits = recipient[1:]
    if not recipient.startswith("+") or not 7 <= len(digits) <= 15 or not digits.isascii() or not digits.isdigit():
        return _bad("'recipient' must be an E.164 number: + and 7 to 15 digits, nothing else")
    number = _from_digits(digits)
    if number is None or not phonenumbers.is_valid_number(number):
        return _bad("'recipient' is not a valid phone number")
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != recipient:
        return _bad("'recipient' is not a valid phone number")
    return number


def _from_digits(digits: str) -> phonenumbers.PhoneNumber | None:
    for size in (1, 2, 3):  # country codes are prefix-free, 1 to 3 digits
        country_code = int(digits[:size])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            number = phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national or "0"))
            zeros = len(national) - len(national.lstrip("0"))
            if zeros and national.strip("0"):
                number.italian_leading_zero = True
                if zeros > 1:
                    number.number_of_leading_zeros = zeros
            return number
    return None
