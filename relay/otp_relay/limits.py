"""Abuse limits, per relay process: a sliding window per recipient and a global token bucket.

Both answer "how many seconds until this would be allowed" (None: allowed now) and only
record when the caller commits, so a request refused by one limit costs nothing in the other.
With N replicas behind a load balancer, a recipient can get up to N x the per-recipient limit
(see relay/README.md).
"""

from __future__ import annotations

import math

from .config import Rate


class RecipientWindow:
    """At most ``rate.limit`` sends per recipient in any ``rate.window`` seconds.

    Memory is bounded by ``max_recipients`` (~300 bytes each): when full, recipients with no
    send left in the window are dropped; if every one is still active, the oldest-seen tenth
    is forgotten (the global bucket still bounds the total, so this favours availability).
    """

    def __init__(self, rate: Rate, max_recipients: int = 100_000) -> None:
        self._limit = rate.limit
        self._window = rate.window
        self._max = max_recipients
        self._sends: dict[str, list[float]] = {}

    def retry_after(self, recipient: str, now: float) -> float | None:
        sends = self._sends.get(recipient)
        if sends is None:
            return None
        cutoff = now - self._window
        if sends[0] <= cutoff:
            sends[:] = [t for t in sends if t > cutoff]
        if len(sends) < self._limit:
            return None
        return sends[0] + self._window - now

    def record(self, recipient: str, now: float) -> None:
        sends = self._sends.get(recipient)
        if sends is None:
            if len(self._sends) >= self._max:
                self._make_room(now)
            self._sends[recipient] = [now]
        else:
            sends.append(now)

    def _make_room(self, now: float) -> None:
        cutoff = now - self._window
        for recipient in [r for r, s in self._sends.items() if not s or s[-1] <= cutoff]:
            del self._sends[recipient]
        if len(self._sends) >= self._max:
            for recipient in list(self._sends)[: max(1, self._max // 10)]:
                del self._sends[recipient]

    def __len__(self) -> int:
        return len(self._sends)


class TokenBucket:
    """``rate.limit`` tokens refilled evenly over ``rate.window`` seconds; bursts up to the limit."""

    def __init__(self, rate: Rate, now: float) -> None:
        self._capacity = float(rate.limit)
        self._per_second = rate.limit / rate.window
        self._tokens = self._capacity
        self._updated = now

    def retry_after(self, now: float) -> float | None:
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._per_second)
        self._updated = now
        if self._tokens >= 1.0:
            return None
        return (1.0 - self._tokens) / self._per_second

    def take(self) -> None:
        self._tokens -= 1.0


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(seconds)))
