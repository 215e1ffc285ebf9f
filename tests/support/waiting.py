"""The one bounded poll of the test suite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.2,
             what: str = "condition") -> T:
    """Call ``predicate`` until it returns something truthy and return that; after ``timeout``
    seconds fail with an AssertionError naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


async def wait_for_async(predicate: Callable[[], Awaitable[T]], timeout: float = 60.0, interval: float = 0.2,
                         what: str = "condition") -> T:
    """``wait_for`` for a coroutine predicate, sleeping on the event loop."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last value: {last!r}")
        await asyncio.sleep(interval)
