"""Abuse limits, per relay process: a sliding window per recipient, a global token bucket and
fixed-window counts (prefix, country, client IP).

Both answer "how many seconds until this would be allowed" (None: allowed now) and only
record when the caller commits, so a request refused by one limit costs nothing in the other.
With N replicas behind a load balancer, a recipient can get up to N x the per-recipient limit
(see relay/README.md).
"""

from __future__ import annotations

import math
from bisect import bisect_right

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
        if sends and sends[0] <= cutoff:  # empty once all expired and a later check refused the send
            del sends[:bisect_right(sends, cutoff)]  # oldest first: the clock only moves forward
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
        _make_room(self._sends, self._max, lambda sends: not sends or sends[-1] <= cutoff)

    def __len__(self) -> int:
        return len(self._sends)


class TokenBucket:
    """``rate.limit`` tokens refilled evenly over ``rate.window`` seconds; bursts up to the limit."""

    def __init__(self, rate: Rate, now: float) -> None:
        self._capacity = float(rate.limit)
        self._per_second = rate.limit / rate.window
        self._tokens = self._capacity
        self._updated = now

    def retry_after(self, now: float, cost: int = 1) -> float | None:
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._per_second)
        self._updated = now
        if self._tokens >= cost:
            return None
        return (cost - self._tokens) / self._per_second

    def take(self, cost: int = 1) -> None:
        self._tokens -= cost


class FixedWindows:
    """Units counted per key in fixed windows (each starts at a multiple of its length): the
    prefix, country and client-IP rules of ``policy``. One entry per key (its window index and
    count), at most ``max_keys``: when full, entries of past windows go first, then the
    oldest-seen tenth (the global bucket still bounds the total)."""

    def __init__(self, max_keys: int = 20_000) -> None:
        self._counts: dict[str, list[int]] = {}  # tag -> [window index, units]
        self._max = max_keys

    def retry_after(self, tag: str, limit: int, seconds: float, cost: int, now: float) -> float | None:
        index = math.floor(now / seconds)
        entry = self._counts.get(tag)
        used = entry[1] if entry is not None and entry[0] == index else 0
        if used + cost <= limit:
            return None
        return (index + 1) * seconds - now

    def record(self, tag: str, seconds: float, cost: int, now: float) -> None:
        index = math.floor(now / seconds)
        entry = self._counts.get(tag)
        if entry is None:
            if len(self._counts) >= self._max:
                self._make_room(index)
            self._counts[tag] = [index, cost]
        elif entry[0] == index:
            entry[1] += cost
        else:
            entry[0], entry[1] = index, cost

    def _make_room(self, index: int) -> None:
        _make_room(self._counts, self._max, lambda entry: entry[0] < index)

    def __len__(self) -> int:
        return len(self._counts)


def _make_room(table: dict, max_keys: int, stale) -> None:
    """Drop the entries ``stale`` says are done; if still full, the oldest-seen tenth."""
    for key in [k for k, value in table.items() if stale(value)]:
        del table[key]
    if len(table) >= max_keys:
        for key in list(table)[: max(1, max_keys // 10)]:
            del table[key]


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (HTTP's Retry-After has no fractions)."""
    return str(max(1, math.ceil(seconds)))
