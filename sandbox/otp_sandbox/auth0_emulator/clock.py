"""Timestamps in Auth0's format."""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable

Clock = Callable[[], float]
wall_clock: Clock = time.time


def iso(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
