"""Request signatures: ``X-Otp-Signature: v1=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>``.

Pure checks over the raw bytes; the caller supplies the keys, the clock and the replay cache.
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
    REPLAYED = "signature already used"


def sign(key: str, timestamp: int | str, body: bytes) -> str:
    """The header value a caller sends (used by tests and benchmarks, like the Auth0 code)."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return _PREFIX + mac.hexdigest()


def verify(
    keys: tuple[hmac.HMAC, ...], timestamp: str | None, signature: str | None, body: bytes, now: float
) -> bytes | Failure:
    """The matched digest (the replay-cache key) or why the request is refused.

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


class ReplayCache:
    """Signatures seen while their timestamp is still acceptable, bounded in size.

    A signature with timestamp ``ts`` is refused as stale once the clock passes ``ts +
    MAX_SKEW``, so it is remembered exactly until then, in a bucket per expiry second. Keys are
    the first 64 bits of the HMAC (a collision, ~1e-8 at a million entries, can only refuse a
    request, never admit one): about 75 bytes per entry. When full of live entries
    ``remember`` refuses (the caller answers 429) rather than forget a live signature, which
    would re-open the replay window.
    """

    def __init__(self, max_entries: int = 500_000) -> None:
        self._seen: set[int] = set()
        self._buckets: dict[int, list[int]] = {}
        self._next_expiry = 0
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now_second: int) -> None:
        if now_second < self._next_expiry:
            return
        if now_second - self._next_expiry > len(self._buckets):  # after a long idle: scan
            due = [second for second in self._buckets if second <= now_second]
        else:
            due = range(self._next_expiry, now_second + 1)
        for second in due:
            self._seen.difference_update(self._buckets.pop(second, ()))
        self._next_expiry = now_second + 1

    def remember(self, digest: bytes, timestamp: int, now: float) -> bool | None:
        """True if new (now remembered), False if replayed, None if the cache is full."""
        self._expire(int(now))
        key = int.from_bytes(digest[:8], "little")
        if key in self._seen:
            return False
        if len(self._seen) >= self._max:
            return None
        self._seen.add(key)
        expiry = max(timestamp + MAX_SKEW + 1, self._next_expiry)
        self._buckets.setdefault(expiry, []).append(key)
        return True
