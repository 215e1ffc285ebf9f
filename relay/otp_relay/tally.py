"""Counts over a sliding window, in one-minute slots: the delivery summary's and the
conversion summary's (what one process saw lately, cheap to add to on every send)."""

from __future__ import annotations

from collections import Counter as Tally, deque
from collections.abc import Callable

SLOT = 60  # seconds per slot


class MinuteTally:
    """``add`` counts keys now; ``total`` sums the slots of the last ``window`` seconds."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self._slots: deque[tuple[int, Tally[str]]] = deque()
        self._window, self._clock = window, clock

    def _current(self) -> Tally[str]:
        now = int(self._clock() // SLOT)
        if not self._slots or self._slots[-1][0] != now:
            self._slots.append((now, Tally()))
        while self._slots[0][0] <= now - self._window // SLOT:
            self._slots.popleft()
        return self._slots[-1][1]

    def add(self, *keys: str) -> None:
        """One more of each key, in the same slot."""
        slot = self._current()
        for key in keys:
            slot[key] += 1

    def total(self) -> Tally[str]:
        self._current()  # drops what is older than the window
        total: Tally[str] = Tally()
        for _, slot in self._slots:
            total.update(slot)
        return total
