"""The token bucket's arithmetic (pure, with a fake clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otp_sandbox.auth0_emulator.ratelimit import TokenBucket


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_refills_continuously_and_reset_is_when_the_next_request_is_added():
    clock = FakeClock()
    bucket = TokenBucket(capacity=2, refill_per_second=2.0, clock=clock)
    assert [bucket.take().allowed for _ in range(3)] == [True, True, False]
    clock.now += 0.25  # half a token back: the next whole one comes 0.25 s later
    refused = bucket.take()
    assert (refused.allowed, refused.remaining, refused.reset) == (False, 0, 1_000_001)
    clock.now += 0.25
    again = bucket.take()
    assert again.allowed and again.remaining == 0
    # Empty again at 1_000_000.5: the next request is added half a second later, not when the
    # bucket is full (a second later).
    assert again.headers() == {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0",
                               "x-ratelimit-reset": "1000001"}
    clock.now = 1_000_010.2
    full = bucket.take()  # full before: one taken, the next is added 0.5 s later
    assert (full.remaining, full.reset) == (1, 1_000_011)


@given(capacity=st.integers(1, 100), refill=st.floats(0.01, 100), takes=st.integers(0, 300))
def test_never_allows_more_than_capacity_without_time_passing(capacity, refill, takes):
    bucket = TokenBucket(capacity, refill, clock=FakeClock())
    allowed = sum(bucket.take().allowed for _ in range(takes))
    assert allowed == min(capacity, takes)


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        TokenBucket(0, 1.0)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
