"""The client side of one tenant's Management API rate limit, shared by every sync of the tenant.

Auth0 limits Management API requests per tenant with a token bucket: a free tenant has a burst
of 2 and 2 requests/s; paid plans more. Every answer carries `x-ratelimit-limit` (the burst),
`x-ratelimit-remaining` and `x-ratelimit-reset` (UNIX seconds at which the *next* request is
added to the bucket). Other clients of the tenant (the Dashboard, Terraform, a deploy pipeline)
drain the same bucket, so a purely local limiter still meets 429s: this one keeps a local
estimate and lets every answer correct it.

- Before each request: take a token from the estimate, waiting for the refill if none is left
  (`acquire`). A wait longer than the caller allows is not slept: it raises Auth0RateLimited with
  the time, so a reconcile never hangs on a drained tenant.
- After each answer (`observe`): the estimate never exceeds what Auth0 says remains; a 429 holds
  every caller of the tenant until its `x-ratelimit-reset` (one shared back-off, not one per
  request).
- Before the first answer the estimate is a free tenant's bucket, the smallest Auth0 sells. The
  refill rate is not in the headers: it is taken as `x-ratelimit-limit` per second (so on every
  Auth0 plan we know of, burst and sustained rate per second are equal); when it is higher in
  truth, only speed is lost, and when lower, the `remaining` and `reset` corrections catch it.

A maintained limiter (aiolimiter's leaky bucket) paces at a fixed local rate but has no public
way to take the server's count or a reset time, which is what keeps us from 429s when someone
else drains the bucket, or learn a paid plan (measured in bench/auth0/README.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from .errors import RATE_LIMITED, Auth0Error

FREE_BURST = 2
FREE_RATE = 2.0  # requests per second


def _number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class TenantRateLimit:
    """One tenant's bucket as seen from here. `clock` is UNIX time (Auth0's reset is one)."""

    def __init__(self, domain: str, capacity: int = FREE_BURST, rate: float = FREE_RATE,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.domain = domain
        self.capacity = capacity
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(capacity)
        self._updated = clock()
        self._lock = asyncio.Lock()
        self.requests = 0  # requests let through
        self.limited = 0  # 429s observed
        self.waited = 0.0  # seconds callers slept here

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.capacity), self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def wait_needed(self) -> float:
        """Seconds until a token is free (0: one is free now)."""
        self._refill(self._clock())
        return 0.0 if self._tokens >= 1 else (1.0 - self._tokens) / self.rate

    async def acquire(self, max_wait: float) -> None:
        """Take one token, sleeping for the refill; Auth0RateLimited when that is > max_wait.
        Callers are served in order (one lock), so a burst never goes out at once."""
        async with self._lock:
            while True:
                wait = self.wait_needed()
                if wait <= 0:
                    self._tokens -= 1
                    self.requests += 1
                    return
                if wait > max_wait:
                    raise Auth0Error(RATE_LIMITED, f"Auth0 tenant {self.domain}: its Management API "
                                     f"rate limit is used up for the next {wait:.1f} s (another client "
                                     "of the tenant, or many channels on it); retrying then",
                                     retry_after=wait)
                self.waited += wait
                await self._sleep(wait)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Correct the estimate from one answer's x-ratelimit-* headers (lower-case keys)."""
        now = self._clock()
        self._refill(now)
        limit = _number(headers, "x-ratelimit-limit")
        if limit is not None and limit >= 1 and int(limit) != self.capacity:
            self.capacity, self.rate = int(limit), float(limit)
            self._tokens = min(self._tokens, float(self.capacity))
        remaining = _number(headers, "x-ratelimit-remaining")
        if remaining is not None:
            self._tokens = min(self._tokens, max(remaining, 0.0))
        if status == 429:
            self.limited += 1
            reset = _number(headers, "x-ratelimit-reset")
            hold = max(0.0, reset - now) if reset is not None else 1.0 / self.rate
            # No token until the reset, for every caller: the refill reaches one exactly then.
            self._tokens = min(self._tokens, 1.0 - hold * self.rate, 0.0)
