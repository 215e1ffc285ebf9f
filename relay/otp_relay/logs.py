"""JSON logs, one object per line. Only whitelisted fields are emitted, so a secret, the OTP
or a full number cannot ride along in ``extra``; numbers are masked before they get here.

Lines are serialised with orjson on the caller's thread and handed to a ``LineWriter``: a
bounded queue drained by a writer thread, so a slow or full stderr pipe never blocks the
event loop (a request never waits for its log line)."""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
from typing import TextIO

import orjson

from .config import Rate
from .limits import TokenBucket

FIELDS = frozenset((
    "request_id", "outcome", "status", "recipient", "country", "duration_ms", "attempts",
    "umid", "upstream", "detail", "retry_after", "key_file", "error", "listen", "base_url",
    "subaccount", "keys", "suppressed", "idempotent", "state", "admin", "worker", "exception",
    "segments", "would_refuse", "channel",
))
MAX_QUEUED = 50_000  # lines waiting for the writer; beyond that lines are dropped and counted


def mask_number(e164: str) -> str:
    """``+6591234567`` -> ``***4567``."""
    return "***" + e164[-4:] if len(e164) > 4 else "***"


class _Clock:
    """The ``ts`` field; the formatted second is reused for every line within it."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int(created * 1000) % 1000:03d}Z"


_clock = _Clock()


def _line(created: float, level: str, logger: str, msg: str, fields: dict) -> bytes:
    entry: dict[str, object] = {"ts": _clock.stamp(created), "level": level, "logger": logger, "msg": msg}
    for name, value in fields.items():
        if name in FIELDS and value is not None:
            entry[name] = value
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


class LineWriter:
    """Lines go to a deque (an append is atomic and never blocks); a daemon thread writes
    them in batches. Bounded: past ``MAX_QUEUED`` waiting lines, new ones are dropped and the
    next batch says how many."""

    def __init__(self, stream: TextIO, interval: float = 0.02) -> None:
        self._out = stream.buffer if hasattr(stream, "buffer") else None
        self._stream = stream
        self._lines: collections.deque[bytes] = collections.deque()
        self._dropped = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, line: bytes) -> None:
        if len(self._lines) >= MAX_QUEUED:
            self._dropped += 1
            return
        self._lines.append(line)

    def _drain(self) -> None:
        lines = self._lines
        batch = [lines.popleft() for _ in range(len(lines))]
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            batch.append(_line(time.time(), "warning", "otp_relay", "log lines dropped: writer behind",
                               {"suppressed": dropped}))
        if not batch:
            return
        data = b"".join(batch)
        try:
            if self._out is not None:
                self._out.write(data)
                self._out.flush()
            else:
                self._stream.write(data.decode())
                self._stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing left to tell
            pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()
        self._drain()

    def close(self) -> None:
        """Write what is queued and stop (at exit)."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5)
        self._drain()


class _QueuedHandler(logging.Handler):
    """Every logging record through the same writer, so all lines keep their order."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = dict(record.__dict__)
            if record.exc_info and record.exc_info[0] is not None:
                # The type only: exception messages can quote request data.
                fields["exception"] = record.exc_info[0].__name__
            self.writer.put(_line(record.created, record.levelname.lower(), record.name,
                                  record.getMessage(), fields))
        except Exception:  # noqa: BLE001  a log line must never break the caller
            self.handleError(record)


_writer: LineWriter | None = None


class RequestLog:
    """The per-request line: the same JSON shape as every other line, without the logging
    machinery's cost on the hot path."""

    def __init__(self, name: str = "otp_relay.request") -> None:
        self._logger = logging.getLogger(name)
        self._name = name

    def info(self, msg: str, fields: dict[str, object]) -> None:
        if _writer is not None and self._logger.isEnabledFor(logging.INFO):
            _writer.put(_line(time.time(), "info", self._name, msg, fields))


class LineBudget:
    """At most ``per_second`` lines a second (burst of as many); the rest are counted and the
    next line that goes out says how many were left out, so a flood of rejected requests
    cannot drive log volume."""

    def __init__(self, per_second: int = 10) -> None:
        self._bucket = TokenBucket(Rate(per_second, 1.0), time.monotonic())
        self.suppressed = 0

    def take(self) -> int | None:
        """None when this line must be left out; otherwise how many were left out before it."""
        if self._bucket.retry_after(time.monotonic()) is not None:
            self.suppressed += 1
            return None
        self._bucket.take()
        left_out, self.suppressed = self.suppressed, 0
        return left_out


def close() -> None:
    """Write every queued line (before the process exits)."""
    if _writer is not None:
        _writer.close()


def configure(level: str, stream: TextIO | None = None) -> None:
    global _writer
    close()
    _writer = LineWriter(stream or sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [_QueuedHandler(_writer)]
    root.setLevel(level)
    # aiohttp's own loggers can print request lines or tracebacks with request data.
    logging.getLogger("aiohttp.access").disabled = True
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
