"""Auth0's per-tenant token bucket and the ``x-ratelimit-*`` headers it reports."""

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
    reset: int  # UNIX seconds at which the bucket is full again

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
        missing = self.capacity - self._tokens
        reset = math.ceil(now + missing / self.refill_per_second)
        return Decision(allowed, self.capacity, int(self._tokens), reset)
