"""Property-based tests: malformed input never yields a 5xx or a forward to 8x8."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from typing import Any

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from otp_relay import messages, signing
from otp_relay.problems import Problem
from tests.fixtures.relay import RelayProcess, otp_body

from .conftest import SIGNING_KEYS

KEY = SIGNING_KEYS[1]
REQUIRED = ("recipient", "text", "message_type", "delivery_method")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
non_strings = json_values.filter(lambda v: not isinstance(v, str) and v is not None)


def _refuse(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


def _finite(token: str) -> float:
    value = float(token)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def strict_json(raw: bytes) -> object:
    """RFC 8259 JSON: Python's parser without its NaN/Infinity extensions."""
    return json.loads(raw, parse_constant=_refuse, parse_float=_finite)


def _is_e164(text: str) -> bool:
    # E.164 numbers have at most 15 digits (ITU-T E.164); phonenumbers alone validates some
    # longer ones (+4930000000000000, 16 digits, is a "valid" Berlin number to it).
    if len(text) > 16:
        return False
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return False
    return (phonenumbers.is_valid_number(number)
            and phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@st.composite
def malformed_bodies(draw: st.DrawFn) -> tuple[bytes, int, str]:
    """Bytes that are not an acceptable send request, by construction, with the parser's
    answer they must get: (raw, status, a phrase of the detail)."""
    body: dict[str, Any] = otp_body("+6591234567", code=draw(st.text(min_size=1, max_size=8)))
    kind = draw(st.sampled_from(["drop", "recipient", "text", "delivery", "ip", "optional",
                                 "type", "key", "not_object", "bytes"]))
    if kind == "drop":
        field = draw(st.sampled_from(REQUIRED))
        del body[field]
        expected = (400, f"'{field}'")
    elif kind == "recipient":
        body["recipient"] = draw(st.text(max_size=20).filter(lambda t: not _is_e164(t)) | non_strings)
        expected = (400, "'recipient'")
    elif kind == "text":
        body["text"] = draw(st.text(alphabet=" \t\n", max_size=5) | non_strings)
        expected = (400, "'text'")
    elif kind == "delivery":
        body["delivery_method"] = draw(st.text(max_size=10).filter(lambda t: t != "text") | non_strings)
        expected = (422, "voice") if body["delivery_method"] == "voice" else (400, "'delivery_method'")
    elif kind == "ip":
        body["client_ip"] = draw(st.text(max_size=40).filter(lambda t: not _is_ip(t)) | non_strings)
        expected = (400, "'client_ip'")
    elif kind == "optional":
        field = draw(st.sampled_from(["code", "locale", "idempotency_key"]))
        body[field] = draw(non_strings)
        expected = (400, f"'{field}' must be a string")
    elif kind == "type":
        body["message_type"] = draw(st.just("") | non_strings)
        expected = (400, "'message_type'")
    elif kind == "key":
        body["idempotency_key"] = draw(st.text(max_size=70).filter(
            lambda t: len(t) != 64 or not set(t) <= set("0123456789abcdef")))
        expected = (400, "'idempotency_key' must be 64 lowercase hex")
    elif kind == "not_object":
        raw = json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
        return raw, 400, "body must be a JSON object"
    else:
        raw = draw(st.binary(max_size=200))
        try:
            parsed = strict_json(raw)
        except (ValueError, RecursionError):
            return raw, 400, "body is not valid JSON"
        assume(not isinstance(parsed, dict))
        return raw, 400, "body must be a JSON object"
    return (json.dumps(body).encode(), *expected)


@given(malformed_bodies())
def test_parser_refuses_malformed_bodies_with_its_reason(case: tuple[bytes, int, str]) -> None:
    raw, status, phrase = case
    result = messages.parse(raw)
    assert isinstance(result, Problem)
    assert result.status == status and phrase in result.detail, (result.status, result.detail)


@given(st.binary(max_size=300))
def test_parser_never_raises(raw: bytes) -> None:
    result = messages.parse(raw)
    assert isinstance(result, (Problem, messages.OtpRequest))


@given(timestamp=st.text(max_size=20) | st.none(), signature=st.text(max_size=80) | st.none(),
       body=st.binary(max_size=100))
def test_signature_check_refuses_garbage(timestamp, signature, body) -> None:
    keys = signing.prime([KEY])
    result = signing.verify(keys, timestamp, signature, body, time.time())
    assert isinstance(result, signing.Failure)


@given(body=st.binary(max_size=200), skew=st.integers(-300, 300), flip=st.integers(0, 63))
def test_signature_check_accepts_exactly_the_signed_bytes(body: bytes, skew: int, flip: int) -> None:
    now = time.time()
    ts = str(int(now) + skew)
    good = signing.sign(KEY, ts, body)
    keys = signing.prime(["other-key", KEY])
    digest = signing.verify(keys, ts, good, body, now)
    assert digest == hmac.new(KEY.encode(), f"{ts}.".encode() + body, hashlib.sha256).digest()
    hex_part = good[3:]
    changed = hex_part[:flip] + ("0" if hex_part[flip] != "0" else "1") + hex_part[flip + 1:]
    assert signing.verify(keys, ts, "v1=" + changed, body, now) is signing.Failure.MISMATCH
    assert signing.verify(keys, ts, good, body + b"x", now) is signing.Failure.MISMATCH


# --- the same properties through the real process --------------------------------------
live = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def forwarded(shared_relay: RelayProcess, emulator_keys):
    """Count of 8x8 requests before the module's live properties ran."""
    return lambda: len(emulator_keys.requests())


@live
@given(case=malformed_bodies())
def test_relay_answers_malformed_bodies_with_the_parsers_reason(shared_relay: RelayProcess, forwarded,
                                                                 case: tuple[bytes, int, str]) -> None:
    """The relay's answer is the parser's own (status and detail), not some other 4xx such
    as a limit or a signature failure."""
    raw, status, phrase = case
    before = forwarded()
    response = shared_relay.post(raw, KEY)
    assert response.headers["content-type"].startswith("application/problem+json")
    answer = json.loads(response.text)
    assert (response.status_code, answer["detail"]) == (status, messages.parse(raw).detail)
    assert phrase in answer["detail"]
    assert forwarded() == before


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(str.strip)


@live
@given(timestamp=header_text, signature=header_text)
def test_relay_refuses_garbage_signatures(shared_relay: RelayProcess, forwarded, timestamp: str, signature: str) -> None:
    before = forwarded()
    raw = json.dumps(otp_body("+6591234567")).encode()
    response = shared_relay.client.post(shared_relay.url + "/v1/messages", content=raw, headers={
        "Content-Type": "application/json", "X-Otp-Timestamp": timestamp, "X-Otp-Signature": signature})
    assert response.status_code == 401
    assert forwarded() == before


def _library_verdict(text: str) -> bool:
    return _is_e164(text)


example_numbers = st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).map(
    lambda region: phonenumbers.example_number(region)).filter(lambda n: n is not None).map(
    lambda n: phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164))


@given(st.one_of(
    example_numbers,
    st.tuples(example_numbers, st.integers(1, 15), st.sampled_from("0123456789")).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:]),  # one digit changed
    st.from_regex(r"\+[0-9]{5,17}", fullmatch=True),
    st.text(max_size=18),
))
@example("+4930000000000000")  # 16 digits: phonenumbers' "valid", not E.164
def test_recipient_check_agrees_with_phonenumbers_parse(text: str) -> None:
    """The fast E.164 path accepts exactly what phonenumbers.parse + is_valid_number +
    format-back-to-E.164 accept."""
    fast = not isinstance(messages._e164(text), Problem)
    assert fast == _library_verdict(text)
