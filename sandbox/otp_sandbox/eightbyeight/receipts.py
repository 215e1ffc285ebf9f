"""Delivery receipts: what 8x8 POSTs to a message's ``dlrCallbackUrl``, and when; and the
poster (``Dispatcher``) that also delivers the voice session summaries (``sessions``).

Format and retries follow 8x8's "Delivery receipts for outbound SMS" and "Message status
reference" pages: one JSON POST per status change, retried after 1, 10, 30 and 90 s on a
connection error, a timeout or an HTTP 4xx/5xx answer. The emulator posts one final status per
message (``delivered`` or ``undelivered``), or none, as the test chose for the destination.

``time_factor`` scales the retry intervals and the per-attempt timeout (tests set a small one
through the admin API; 1.0, the default, is 8x8's schedule). Receipts go only to loopback
addresses and the networks the emulator was told to allow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

RETRY_INTERVALS = (1.0, 10.0, 30.0, 90.0)  # seconds between attempts, as 8x8 documents
ATTEMPT_TIMEOUT = 10.0  # 8x8 documents none; the emulator's choice (scaled by time_factor)
VALIDITY = dt.timedelta(hours=48)  # 8x8 sends no receipt for a status found later than this
PRICE_PER_SMS = 0.0125
CURRENCY = "USD"

DELIVERED, UNDELIVERED, NO_RECEIPT = "delivered", "undelivered", "none"
DEFAULT_DETAIL = {DELIVERED: "delivered_to_recipient", UNDELIVERED: "rejected_by_operator"}
# A few of 8x8's "SMS Delivery Receipt Error Codes"; others need an explicit error_message.
ERROR_MESSAGES = {0: "No reason code", 1: "Absent subscriber", 7: "Delivery failure",
                  15: "Invalid destination", 36: "SMS expired", 43: "Spam filter",
                  46: "Subscriber not reachable", 57: "Unknown error"}


@dataclass(frozen=True)
class Outcome:
    """What happens to messages for one destination: the final state, when, and why."""

    kind: str = DELIVERED  # delivered | undelivered | none (no receipt at all)
    after_ms: int = 0  # from 8x8's acceptance to the status change
    error_code: int | None = None  # undelivered only
    error_message: str | None = None
    detail: str | None = None  # default: delivered_to_recipient / rejected_by_operator

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Outcome":
        kind = data.get("kind", DELIVERED)
        if kind not in (DELIVERED, UNDELIVERED, NO_RECEIPT):
            raise ValueError(f"unknown outcome {kind!r}: use delivered, undelivered or none")
        after_ms = data.get("after_ms", 0)
        if not isinstance(after_ms, int) or not 0 <= after_ms <= VALIDITY.total_seconds() * 1000:
            raise ValueError("after_ms must be an integer from 0 to 48 hours")
        error_code = data.get("error_code")
        if kind == UNDELIVERED:
            error_code = 0 if error_code is None else error_code
            if not isinstance(error_code, int):
                raise ValueError("error_code must be an integer")
            if data.get("error_message") is None and error_code not in ERROR_MESSAGES:
                raise ValueError(f"give error_message for error_code {error_code}")
        elif error_code is not None:
            raise ValueError("error_code is for undelivered outcomes only")
        return cls(kind=kind, after_ms=after_ms, error_code=error_code,
                   error_message=data.get("error_message") or (ERROR_MESSAGES.get(error_code)
                                                                if error_code is not None else None),
                   detail=data.get("detail"))


def time_factor(value: object) -> float:
    """A valid scale for the retry schedule: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"the receipt time factor must be a number in (0, 1], got {value!r}")
    return float(value)


def _timestamp(moment: dt.datetime) -> str:
    """8x8's ``yyyy-MM-ddTHH:mm:ss.ffZ``."""
    moment = moment.astimezone(dt.timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 10_000:02d}Z"


def receipt_body(message: dict[str, Any], outcome: Outcome, at: dt.datetime) -> dict[str, Any]:
    """The webhook body for ``message`` (the emulator's record) reaching ``outcome``."""
    status: dict[str, Any] = {"state": outcome.kind, "detail": outcome.detail or DEFAULT_DETAIL[outcome.kind],
                              "timestamp": _timestamp(at)}
    if outcome.kind == UNDELIVERED:
        status["errorCode"] = outcome.error_code
        status["errorMessage"] = outcome.error_message
    payload: dict[str, Any] = {"umid": message["umid"]}
    for key in ("batchId", "clientMessageId", "clientBatchId"):
        if message.get(key) is not None:
            payload[key] = message[key]
    payload["subAccountId"] = message["subaccount"]
    if message.get("source") is not None:
        payload["source"] = message["source"]
    payload["destination"] = "+" + message["destination"]
    payload["status"] = status
    if outcome.kind == DELIVERED:  # undelivered messages are not charged: no price
        count = message["smsCount"]
        payload["price"] = {"total": round(PRICE_PER_SMS * count, 6), "perSms": PRICE_PER_SMS,
                            "currency": CURRENCY}
    payload["smsCount"] = message["smsCount"]
    return {"namespace": "SMS", "eventType": "outbound_message_status_changed",
            "description": "SMS outbound message delivery receipt", "payload": payload}


class Dispatcher:
    """Posts receipts in the background and records every attempt."""

    def __init__(self, ssl_context: ssl.SSLContext,
                 allowed_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> None:
        self.ssl_context = ssl_context
        self.time_factor = 1.0
        self.allowed_networks = list(allowed_networks)
        self.attempts: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, message: dict[str, Any], outcome: Outcome) -> None:
        """The delivery receipt of an accepted SMS, ``outcome.after_ms`` from now."""
        if outcome.kind == NO_RECEIPT or not message.get("dlrCallbackUrl"):
            return
        self.post_later(message["dlrCallbackUrl"], {"umid": message["umid"]}, outcome.after_ms / 1000,
                        lambda: receipt_body(message, outcome, dt.datetime.now(dt.timezone.utc)))

    def post_later(self, url: str, ref: Mapping[str, Any], delay: float,
                   body: Callable[[], dict[str, Any]], headers: Mapping[str, str] | None = None) -> None:
        """POST ``body()`` to ``url`` after ``delay`` seconds, retried on 8x8's schedule; each
        attempt is recorded with ``ref`` (what the body is about, e.g. its ``umid``)."""
        task = asyncio.get_running_loop().create_task(
            self._deliver(url, dict(ref), delay, body, dict(headers or {}), time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Messages whose receipt is still to be posted (or retried)."""
        return len(self._tasks)

    def clear(self) -> None:
        """Cancel receipts still pending, forget attempts, back to 8x8's schedule."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        self.attempts.clear()
        self.time_factor = 1.0

    async def close(self) -> None:
        self.clear()
        if self._session is not None:
            await self._session.close()

    async def _deliver(self, url: str, ref: dict[str, Any], delay: float, make_body: Callable[[], dict[str, Any]],
                       headers: dict[str, str], accepted: float) -> None:
        await asyncio.sleep(delay)
        body = make_body()
        for attempt, wait in enumerate((0.0, *RETRY_INTERVALS), start=1):
            await asyncio.sleep(wait * self.time_factor)
            result = await self._post(url, body, headers)
            self.attempts.append({**ref, "attempt": attempt, "result": result,
                                  "elapsed": round(time.monotonic() - accepted, 3), "body": body})
            if result == "not allowed" or (isinstance(result, int) and result < 400):
                return

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> int | str:
        """The HTTP status, or why there is none."""
        if not await self._allowed(url):
            return "not allowed"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.ssl_context),
                cookie_jar=aiohttp.DummyCookieJar())
        timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT * self.time_factor)
        try:
            async with self._session.post(url, json=body, timeout=timeout, headers=headers,
                                          allow_redirects=False) as response:
                await response.read()
                return response.status
        except asyncio.TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError):
            return "connection error"

    async def _allowed(self, url: str) -> bool:
        """Only loopback (and the allowed networks): the sandbox never posts elsewhere."""
        host = urlsplit(url).hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError:
            return False
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
        return bool(addresses) and all(
            a.is_loopback or any(a in n for n in self.allowed_networks) for a in addresses)
