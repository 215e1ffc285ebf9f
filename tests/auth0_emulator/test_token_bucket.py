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


def test_refills_continuously_and_reports_when_full_again():
    clock = FakeClock()
    bucket = TokenBucket(capacity=2, refill_per_second=1.0, clock=clock)
    assert [bucket.take().allowed for _ in range(3)] == [True, True, False]
    refused = bucket.take()
    assert (refused.remaining, refused.reset) == (0, 1_000_002)
    clock.now += 1.0
    again = bucket.take()
    assert again.allowed and again.remaining == 0
    assert again.headers() == {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0",
                               "x-ratelimit-reset": "1000003"}


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
