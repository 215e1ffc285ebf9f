"""Bounds on what a client can hold open: an asyncio protocol wrapper around the HTTP server's
protocol, independent of the HTTP library.

Every public connection is in one of three states:
- ``WAITING``: idle between requests, or receiving a request's headers. The sweep closes it
  after ``idle_timeout`` (idle) or ``header_timeout`` from its first byte (headers), and it
  may be evicted: when ``max_connections`` are open, a new connection closes the oldest
  waiting one, so slow or idle clients can never lock legitimate ones out;
- ``READING``: a handler runs and is reading the body (bounded by the handler's own timeout);
- ``SENDING``: the body is in, the message is being decided and sent (bounded by the deadline).
Only when every open connection is busy is a new one refused, with a canned 503.
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
_BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")


class _Guarded(asyncio.Protocol):
    __slots__ = ("_guard", "inner", "transport", "state", "deadline", "has_data")

    def __init__(self, guard: "ConnectionGuard", inner: asyncio.Protocol) -> None:
        self._guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.state = WAITING
        self.deadline = 0.0  # loop time after which a WAITING connection is dropped
        self.has_data = False  # bytes of a request arrived while WAITING

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._guard._opened(self):
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.state is WAITING and not self.has_data:
            self.has_data = True
            self.deadline = self._guard._now() + self._guard.header_timeout
        self.inner.data_received(data)

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
                 on_drop: Callable[[str], None] = lambda reason: None) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self._on_drop = on_drop  # "evicted", "refused", "timeout", "shutdown"
        self._open: dict[object, _Guarded] = {}  # transport -> connection
        self._waiting: OrderedDict[_Guarded, None] = OrderedDict()  # oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._open)

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
            if self._waiting:
                oldest = next(iter(self._waiting))
                self._drop(oldest, "evicted")
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
        """Drop every waiting connection past its deadline; runs while connections are open."""
        now = self._now()
        for conn in [c for c in self._waiting if c.deadline <= now]:
            self._drop(conn, "timeout")
        assert self._loop is not None
        self._sweeper = self._loop.call_later(TICK, self._sweep) if self._open else None

    def _closed(self, conn: _Guarded) -> None:
        if self._open.pop(conn.transport, None) is not None:
            self._waiting.pop(conn, None)

    def _wait(self, conn: _Guarded, seconds: float) -> None:
        conn.state, conn.has_data = WAITING, False
        conn.deadline = self._now() + seconds
        self._waiting[conn] = None

    def _drop(self, conn: _Guarded, reason: str) -> None:
        self._closed(conn)
        if conn.transport is not None:
            conn.transport.abort()
        self._on_drop(reason)

    # --- called by the HTTP handler -------------------------------------------------------
    def request_started(self, transport: object) -> None:
        conn = self._open.get(transport)
        if conn is not None:
            conn.state = READING
            self._waiting.pop(conn, None)

    def body_received(self, transport: object) -> None:
        conn = self._open.get(transport)
        if conn is not None:
            conn.state = SENDING

    def request_finished(self, transport: object) -> None:
        conn = self._open.get(transport)
        if conn is not None:
            self._wait(conn, self.idle_timeout)

    def close_unbusy(self) -> int:
        """Drop every connection not sending a message (shutdown); how many were dropped."""
        doomed = [conn for conn in self._open.values() if conn.state is not SENDING]
        for conn in doomed:
            self._drop(conn, "shutdown")
        return len(doomed)
