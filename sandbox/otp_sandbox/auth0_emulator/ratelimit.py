"""Auth0's per-tenant token bucket and the ``x-ratelimit-*`` headers it reports.

``x-ratelimit-reset`` is the UNIX time (whole seconds, rounded up) at which the next request is
added to the bucket, not the time it is full again (Auth0's "Rate Limit Use Cases"). Auth0 does
not say what it reports while the bucket is full; here the current second.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # UNIX seconds at which the next request is added to the bucket

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
        }


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``refill_per_second``; one per request."""

    def __init__(
        self,
        capacity: int,
        refill_per_second: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1 or refill_per_second <= 0:
            raise ValueError("rate limit needs capacity >= 1 and refill_per_second > 0")
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def take(self) -> Decision:
        now = self._clock()
        self._tokens = min(
            self.capacity, self._tokens + (now - self._updated) * self.refill_per_second
        )
        self._updated = now
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        # Time until the next whole token: the fraction of one still missing.
        missing = 0.0 if self._tokens >= self.capacity else 1.0 - (self._tokens % 1.0)
        reset = math.ceil(now + missing / self.refill_per_second)
        return Decision(allowed, self.capacity, int(self._tokens), reset)
