"""JSON logs, one object per line. Only whitelisted fields are emitted, so a secret, the OTP
or a full number cannot ride along in ``extra``; numbers are masked before they get here."""

from __future__ import annotations

import json
import logging
import sys
import time

from .config import Rate
from .limits import TokenBucket

FIELDS = (
    "request_id", "outcome", "status", "recipient", "country", "duration_ms", "attempts",
    "umid", "upstream", "detail", "retry_after", "key_file", "error", "listen", "base_url",
    "subaccount", "keys", "suppressed", "idempotent", "state", "admin",
)


def mask_number(e164: str) -> str:
    """``+6591234567`` -> ``***4567``."""
    return "***" + e164[-4:] if len(e164) > 4 else "***"


def _entry(created: float, level: str, logger: str, msg: str, fields: dict) -> dict[str, object]:
    entry: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created * 1000) % 1000:03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    for name in FIELDS:
        value = fields.get(name)
        if value is not None:
            entry[name] = value
    return entry


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname.lower(), record.name, record.getMessage(),
                       record.__dict__)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception messages can quote request data.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, separators=(",", ":"))


class RequestLog:
    """The per-request line, written straight to the handler's stream: the same JSON shape
    as every other line, without the logging machinery's cost on the hot path."""

    def __init__(self, name: str = "otp_relay.request") -> None:
        self._logger = logging.getLogger(name)
        self._name = name

    def info(self, msg: str, fields: dict[str, object]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        line = json.dumps(_entry(time.time(), "info", self._name, msg, fields), separators=(",", ":"))
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if stream is not None:
                stream.write(line + "\n")


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


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own loggers can print request lines or tracebacks with request data.
    logging.getLogger("aiohttp.access").disabled = True
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
