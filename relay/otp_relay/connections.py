"""Bounds on what a client can hold open: an asyncio protocol wrapper around the HTTP server's
protocol, independent of the HTTP library.

Every connection is in one of three states:
- ``WAITING``: idle between requests, or receiving a request's headers. The sweep closes it
  after ``idle_timeout`` (idle) or ``header_timeout`` from its first byte (headers); a header
  block larger than ``max_header_bytes`` is answered 431 and closed at once, so no client holds
  more than that of header data. A waiting connection is the first to be evicted: when
  ``max_connections`` are open, a new connection closes the oldest waiting one;
- ``READING``: the headers are in and the handler reads the body. Readers are a pool of their
  own, at most ``max_readers``: a new reader evicts the oldest one, and a reader whose body
  arrives slower than ``min_body_rate`` bytes/s (after ``body_grace`` seconds) is dropped by the
  sweep. So nothing an unauthenticated client sends can hold a send's resources: a body that
  arrived with its headers (every real caller's) leaves this state in the same loop turn;
- ``SENDING``: the body is in, the message is being decided and sent (bounded by the deadline).
Only when every open connection is sending is a new one refused, with a canned 503.
Deadlines are fields checked by one sweep every ``TICK`` seconds, not a timer per connection
and request: a request then costs a few assignments, and a deadline is kept to within a tick.
On shutdown, ``close_unbusy`` drops every connection that is not ``SENDING`` at once, so a
stalled client never holds SIGTERM up.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

WAITING, READING, SENDING = "waiting", "reading", "sending"
TICK = 0.25  # seconds between sweeps for connections past their deadline
MAX_HEADER_BYTES = 4 * 1024  # a request's header block at most (the contract needs < 1 KiB)
MAX_BODY = 16 * 1024  # the largest body the relay reads (the contract's limit)
MAX_READERS = 64  # connections reading a body at once (a real caller's body comes with its headers)
MIN_BODY_RATE = 1024  # bytes/s a body must keep up after BODY_GRACE (16 KiB max: 16 s at most)
BODY_GRACE = 1.0  # seconds a body may take before its rate counts
_END_OF_HEADERS = b"\r\n\r\n"
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
_BODY_TOO_SLOW = (b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
_BODY_TOO_LARGE = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")


class _Guarded(asyncio.Protocol):
    __slots__ = ("_guard", "inner", "transport", "state", "deadline", "has_data", "waiting_bytes",
                 "headers_end", "tail", "read_since", "read_bytes")

    def __init__(self, guard: "ConnectionGuard", inner: asyncio.Protocol) -> None:
        self._guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.state = WAITING
        self.deadline = 0.0  # loop time after which a WAITING connection is dropped
        self.has_data = False  # bytes of a request arrived while WAITING
        self.waiting_bytes = 0  # bytes received since then
        self.headers_end = -1  # where in them the header block ended (-1: not yet)
        self.tail = b""  # last bytes so far (the block's end may straddle two reads)
        self.read_since = 0.0  # loop time the body started to be read (READING)
        self.read_bytes = 0  # bytes received since then

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._guard._opened(self):
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is WAITING:
            if not self.has_data:
                self.has_data, self.waiting_bytes, self.headers_end, self.tail = True, 0, -1, b""
                self.deadline = self._guard._now() + self._guard.header_timeout
            if not self._count(data):
                return
        elif state is READING:
            self.read_bytes += len(data)
        self.inner.data_received(data)

    def _count(self, data: bytes) -> bool:
        """Bytes before the handler starts: the header block at most ``max_header_bytes``, and
        with what may follow it before the handler runs (the body, a second request after an
        answer the handler never saw) at most that plus ``MAX_BODY``. False: too much (dropped)."""
        guard = self._guard
        if self.headers_end < 0:
            seen = self.tail + data if self.tail else data
            end = seen.find(_END_OF_HEADERS)
            if end >= 0:
                self.headers_end, self.tail = self.waiting_bytes - len(self.tail) + end, b""
            else:
                self.tail = seen[-3:]
        self.waiting_bytes += len(data)
        header_bytes = self.waiting_bytes if self.headers_end < 0 else self.headers_end
        if header_bytes > guard.max_header_bytes:
            guard._drop(self, "headers_too_large", _HEADERS_TOO_LARGE)
            return False
        if self.waiting_bytes > guard.max_header_bytes + MAX_BODY:
            guard._drop(self, "body_too_large", _BODY_TOO_LARGE)
            return False
        return True

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard._closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    def __init__(self, max_connections: int, header_timeout: float, idle_timeout: float,
                 on_drop: Callable[[str], None] = lambda reason: None, *,
                 max_readers: int = MAX_READERS, min_body_rate: float = MIN_BODY_RATE,
                 body_grace: float = BODY_GRACE, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_readers = max_readers
        self.min_body_rate = min_body_rate
        self.body_grace = body_grace
        self.max_header_bytes = max_header_bytes
        # "evicted", "refused", "timeout", "shutdown", "headers_too_large", "body_too_large", "slow_body"
        self._on_drop = on_drop
        self._open: dict[object, _Guarded] = {}  # transport -> connection
        self._waiting: OrderedDict[_Guarded, None] = OrderedDict()  # oldest first
        self._reading: OrderedDict[_Guarded, None] = OrderedDict()  # oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._open)

    @property
    def readers(self) -> int:
        return len(self._reading)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, factory())

    # --- called by the protocol -----------------------------------------------------------
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _opened(self, conn: _Guarded) -> bool:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if len(self._open) >= self.max_connections:
            victims = self._waiting or self._reading
            if victims:
                self._drop(next(iter(victims)), "evicted")
            else:
                assert conn.transport is not None
                conn.transport.write(_BUSY_RESPONSE)
                conn.transport.close()
                self._on_drop("refused")
                return False
        self._open[conn.transport] = conn
        self._wait(conn, self.header_timeout)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(TICK, self._sweep)
        return True

    def _sweep(self) -> None:
        """Drop every waiting connection past its deadline and every reader slower than the
        minimum rate; runs while connections are open."""
        now = self._now()
        for conn in [c for c in self._waiting if c.deadline <= now]:
            self._drop(conn, "timeout")
        if self._reading:
            rate, grace = self.min_body_rate, self.body_grace
            for conn in [c for c in self._reading
                         if now - c.read_since > grace and c.read_bytes < rate * (now - c.read_since - grace)]:
                self._drop(conn, "slow_body", _BODY_TOO_SLOW)
        assert self._loop is not None
        self._sweeper = self._loop.call_later(TICK, self._sweep) if self._open else None

    def _closed(self, conn: _Guarded) -> None:
        if self._open.pop(conn.transport, None) is not None:
            self._waiting.pop(conn, None)
            self._reading.pop(conn, None)

    def _wait(self, conn: _Guarded, seconds: float) -> None:
        conn.state, conn.has_data = WAITING, False
        conn.deadline = self._now() + seconds
        self._waiting[conn] = None

    def _drop(self, conn: _Guarded, reason: str, answer: bytes = b"") -> None:
        self._closed(conn)
        if conn.transport is not None:
            if answer:  # a canned answer, then close once it is written
                conn.transport.write(answer)
                conn.transport.close()
            else:
                conn.transport.abort()
        self._on_drop(reason)

    # --- called by the HTTP handler -------------------------------------------------------
    def request_started(self, transport: object) -> None:
        """The headers are in: the connection joins the readers' pool (evicting the oldest
        reader when full) until ``body_received``."""
        conn = self._open.get(transport)
        if conn is not None:
            conn.state = READING
            self._waiting.pop(conn, None)
            conn.read_since, conn.read_bytes = self._now(), 0
            self._reading[conn] = None
            if len(self._reading) > self.max_readers:
                self._drop(next(iter(self._reading)), "evicted", _BUSY_RESPONSE)

    def body_received(self, transport: object) -> None:
        conn = self._open.get(transport)
        if conn is not None:
            conn.state = SENDING
            self._reading.pop(conn, None)

    def request_finished(self, transport: object) -> None:
        conn = self._open.get(transport)
        if conn is not None:
            self._reading.pop(conn, None)
            self._wait(conn, self.idle_timeout)

    def close_unbusy(self) -> int:
        """Drop every connection not sending a message (shutdown); how many were dropped."""
        doomed = [conn for conn in self._open.values() if conn.state is not SENDING]
        for conn in doomed:
            self._drop(conn, "shutdown")
        return len(doomed)
