"""Idempotency keys and abuse limits: the decisions, in process or shared through Redis.

One operation decides whether a message may go to 8x8 (``claim``) and one records what came of
it (``settle``). ``claim`` looks at the message's idempotency key first (a key already sent,
in flight or with an unknown outcome is never sent again), then the global token bucket, then
the recipient's sliding window, and only when all three allow it takes a token, records the
send and marks the key in flight, as one atomic step. ``MemoryState`` does that for one process;
``RedisState`` does it in a server-side Lua script so every replica and every restart sees the
same keys and budgets (``redis_state.py``).

Library-independent on purpose: the HTTP layer only maps the verdicts to answers.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from .config import MAX_IDEMPOTENCY_KEYS, Rate
from .limits import FixedWindows, RecipientWindow, TokenBucket
from .policy import Window

_HEX = frozenset("0123456789abcdef")


def idempotency_key(recipient: str, code: str | None, message_type: str, text: str) -> str:
    """Lowercase hex SHA-256 of ``recipient\\ncode\\nmessage_type\\ntext`` (code "" when absent),
    the same formula the Auth0 code uses."""
    joined = "\n".join((recipient, code or "", message_type, text))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def valid_key(value: str) -> bool:
    return len(value) == 64 and _HEX.issuperset(value)


def recipient_tag(recipient: str) -> str:
    """What stores remember about a number: a digest, never the number itself."""
    return hashlib.sha256(recipient.encode()).hexdigest()[:32]


# --- verdicts of ``claim`` ----------------------------------------------------------------
@dataclass(frozen=True)
class Proceed:
    """The key is now this request's: send the message, then ``settle``. ``would_refuse``: the
    monitor-mode windows that would have refused it."""

    would_refuse: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replay:
    """8x8 accepted this key's message earlier; ``umid`` is its id."""

    umid: str


@dataclass(frozen=True)
class InFlight:
    retry_after: float


@dataclass(frozen=True)
class MaybeSent:
    """An earlier attempt may have reached 8x8; the key is never sent again."""


VOICE_RECIPIENT = "voice_recipient"  # the Limited.limit of the per-recipient window for calls


@dataclass(frozen=True)
class Limited:
    limit: str  # "global", "recipient", "voice_recipient", a window rule of ``policy.WINDOW_RULES`` or "canary"
    retry_after: float


@dataclass(frozen=True)
class Full:
    """The in-process store holds its maximum of live keys: this message is refused (nothing
    is forgotten); ``retry_after`` is when the oldest key expires and frees room."""

    retry_after: float


Verdict = Proceed | Replay | InFlight | MaybeSent | Limited | Full


class StateUnavailable(Exception):
    """The store cannot decide (unreachable, timed out, out of memory): the send must not happen."""


# --- outcomes for ``settle`` --------------------------------------------------------------
ACCEPTED, UNKNOWN, RELEASE = "accepted", "unknown", "release"


class State(Protocol):
    scope: str  # "process" or "shared"

    async def claim(self, key: str, recipient: str, request_id: str, cost: int = 1,
                    windows: tuple[Window, ...] = (), user_limits: bool = True,
                    delivery: str = "text") -> Verdict:
        """``cost``: units of the global bucket (SMS segments); ``windows``: the policy's
        fixed-window counts this send is charged to; ``user_limits=False`` (the canary): the
        global bucket and the recipient window neither refuse nor count it (``windows`` do);
        ``delivery`` "voice": the recipient window is the one for calls (its own rate and
        counts, refusing as ``voice_recipient``), everything else is the same."""
        ...

    async def settle(self, key: str, outcome: str, umid: str = "") -> None: ...

    async def check(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    """How long keys live: ``retention`` after they are settled or claimed, and how long a
    claimed key counts as in flight (the relay's deadline plus a margin) before an unsettled
    one (its relay died) is treated as an unknown outcome."""

    retention: float
    in_flight: float


@dataclass(slots=True)
class _Record:  # slots: up to 200,000 live at once
    state: str  # "p" pending, "a" accepted, "u" unknown
    umid: str
    in_flight_until: float
    expires: float


class MemoryState:
    """Exact state for one process, bounded: at most ``max_keys`` live keys. Every record
    lives exactly ``retention`` from its last change, so insertion order is expiry order. When
    full of live keys a claim is refused (``Full``, that message only) rather than forget a key;
    expired keys are dropped at every claim, so room comes back by itself."""

    scope = "process"

    def __init__(self, per_recipient: Rate, global_limit: Rate, timing: Timing,
                 max_keys: int = MAX_IDEMPOTENCY_KEYS, clock=time.monotonic,
                 voice_per_recipient: Rate | None = None) -> None:
        self._clock = clock
        self._timing = timing
        self._keys: OrderedDict[str, _Record] = OrderedDict()
        self._first_expires = 0.0  # at most the oldest record's expiry (nothing expires before it)
        self._max_keys = max_keys
        self._recipients = {"text": RecipientWindow(per_recipient),
                            "voice": RecipientWindow(voice_per_recipient or per_recipient)}
        self._bucket = TokenBucket(global_limit, clock())
        self._windows: dict[str, FixedWindows] = {}  # per rule

    def __len__(self) -> int:
        return len(self._keys)

    def _expire(self, now: float) -> None:
        if now < self._first_expires:  # the oldest record cannot have expired yet
            return
        keys = self._keys
        while keys:
            key, record = next(iter(keys.items()))
            if record.expires > now:
                # records are appended with ever later expiry, so the oldest one's only moves
                # later (removed, or moved to the end): a lower bound until the next check
                self._first_expires = record.expires
                return
            del keys[key]

    def _put(self, key: str, record: _Record) -> None:
        self._keys[key] = record
        self._keys.move_to_end(key)

    async def claim(self, key: str, recipient: str, request_id: str, cost: int = 1,
                    windows: tuple[Window, ...] = (), user_limits: bool = True,
                    delivery: str = "text") -> Verdict:
        now = self._clock()
        self._expire(now)
        record = self._keys.get(key)
        if record is not None:
            return _verdict_of(record, now, lambda: self._put(key, _Record(
                "u", "", 0.0, now + self._timing.retention)))
        tag = recipient_tag(recipient)
        recipients = self._recipients[delivery]
        if user_limits:
            wait = self._bucket.retry_after(now, cost)
            if wait is not None:
                return Limited("global", wait)
            wait = recipients.retry_after(tag, now)
            if wait is not None:
                return Limited(recipient_limit(delivery), wait)
        wall = time.time()  # fixed windows follow the wall clock (the same in every replica)
        would: list[str] = []
        for window in windows:
            counts = self._windows.get(window.rule)
            if counts is None:
                counts = self._windows[window.rule] = FixedWindows()
            wait = counts.retry_after(window.tag, window.limit, window.seconds, window.cost, wall)
            if wait is not None:
                if not window.monitor:
                    return Limited(window.rule, wait)
                would.append(window.rule)
        if len(self._keys) >= self._max_keys:
            return Full(max(0.0, next(iter(self._keys.values())).expires - now))
        if user_limits:
            self._bucket.take(cost)
            recipients.record(tag, now)
        for window in windows:
            self._windows[window.rule].record(window.tag, window.seconds, window.cost, wall)
        self._put(key, _Record("p", "", now + self._timing.in_flight, now + self._timing.retention))
        return Proceed(tuple(would))

    async def settle(self, key: str, outcome: str, umid: str = "") -> None:
        if outcome == RELEASE:
            self._keys.pop(key, None)
            return
        state = "a" if outcome == ACCEPTED else "u"
        self._put(key, _Record(state, umid, 0.0, self._clock() + self._timing.retention))

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def recipient_limit(delivery: str) -> str:
    """The name of the per-recipient window a ``delivery`` is counted in."""
    return VOICE_RECIPIENT if delivery == "voice" else "recipient"


def _verdict_of(record: _Record, now: float, mark_unknown) -> Verdict:
    if record.state == "a":
        return Replay(record.umid)
    if record.state == "u":
        return MaybeSent()
    if now < record.in_flight_until:
        return InFlight(record.in_flight_until - now)
    mark_unknown()  # claimed but never settled: its relay died mid-send
    return MaybeSent()
