"""Request signatures: ``X-Otp-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>``.

Pure checks over the raw bytes; the caller supplies the keys and the clock. A captured request
is worthless to replay: its idempotency key makes it the same message (``state.py``).
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum

MAX_SKEW = 300  # seconds a timestamp may be off the relay's clock
_PREFIX = "v1="
_HEX_LEN = 64
_HEX = frozenset("0123456789abcdefABCDEF")


class Failure(str, Enum):
    MISSING = "missing signature or timestamp"
    MALFORMED = "malformed signature or timestamp"
    STALE = "timestamp outside the allowed window"
    MISMATCH = "signature does not match"


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    """The header value a caller sends (used by tests and benchmarks, like the Auth0 code)."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def verify(
    keys: tuple[hmac.HMAC, ...], timestamp: str | None, signature: str | None, body: bytes, now: float
) -> bytes | Failure:
    """The matched digest or why the request is refused.

    ``keys`` are HMAC objects primed with each accepted key; every key is tried with a
    constant-time comparison so timing tells nothing about which key (if any) matched.
    """
    if not timestamp or not signature:
        return Failure.MISSING
    if len(timestamp) > 12 or not timestamp.isascii() or not timestamp.isdigit():
        return Failure.MALFORMED
    hex_part = signature[len(_PREFIX):]
    if not signature.startswith(_PREFIX) or len(hex_part) != _HEX_LEN or not _HEX.issuperset(hex_part):
        return Failure.MALFORMED
    if abs(int(now) - int(timestamp)) > MAX_SKEW:  # whole seconds, as sent
        return Failure.STALE
    claimed = bytes.fromhex(hex_part)
    message = timestamp.encode() + b"." + body
    matched = False
    for primed in keys:
        mac = primed.copy()
        mac.update(message)
        matched |= hmac.compare_digest(mac.digest(), claimed)
    return claimed if matched else Failure.MISMATCH


def prime(keys: list[str]) -> tuple[hmac.HMAC, ...]:
    """HMAC objects for ``keys`` (UTF-8 bytes of each line), copied per request."""
    return tuple(hmac.new(k.encode(), digestmod=hashlib.sha256) for k in keys)

