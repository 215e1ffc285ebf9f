"""8x8 delivery receipts: did the SMS reach the phone?

Every send carries ``dlrCallbackUrl = <receipt URL>/<token>`` (the newest line of the receipt
token file); 8x8 POSTs one JSON receipt per status change there and retries on any error for
up to 48 h. Receipts are not signed, so the token in the path is the only proof: it is
compared in constant time against every line of the file (the current and the previous token,
so a rotation loses no receipt in flight), and a wrong one gets the same plain 404 as a path
that does not exist. A receipt is answered 200 at once (8x8 would retry anything else); the
same ``umid`` + ``state`` is counted once (8x8 retries, several replicas); receipts for
messages the relay does not know (sent before a restart) still count, only without a
delivery time.

Parsing, token check, de-duplication and the delivery window are framework independent; the
aiohttp handler at the end is thin.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import Counter as Tally, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import phonenumbers
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .config import Settings
from .keys import WatchedFile, parse_signing_keys
from .logs import RequestLog, mask_number

MAX_RECEIPT = 8 * 1024  # bytes; 8x8's receipts are well under 1 KiB
MAX_REMEMBERED = 100_000  # umids (submit times) and umid+state pairs kept in process
RETENTION = 48 * 3600  # seconds: 8x8 sends no receipt later than this
STATES = ("queued", "rejected", "sent", "delivered", "undelivered", "read")  # 8x8's status reference
DETAILS = ("delivered_to_operator", "delivered_to_recipient", "rejected_by_operator",
           "undelivered_to_recipient")
DELIVERED = frozenset({"delivered"})
FAILED = frozenset({"undelivered", "rejected"})
SUMMARY_WINDOW = 15 * 60  # seconds the delivery summary covers
_BUCKET = 60  # seconds per slot of the window
_MAX_REASON = 64
_UMID_CHARS = frozenset("0123456789abcdefABCDEF-")
receipt_log = RequestLog("otp_relay.receipt")
RECEIPT_PATH = "/v1/receipts"
SUMMARY_PATH = "/v1/delivery-summary"


@dataclass(frozen=True)
class Receipt:
    umid: str
    state: str  # one of STATES, or "other"
    detail: str  # one of DETAILS, "other" or ""
    error_code: str  # "" or a small integer as text, or "other"
    reason: str  # why it failed (8x8's errorMessage, capped), "" when delivered
    country: str  # ISO 3166 region of the destination, or "unknown"
    recipient: str  # masked: last 4 digits at most


def _one_of(value: object, allowed: tuple[str, ...], absent: str = "") -> str:
    if value is None:
        return absent
    return value if isinstance(value, str) and value in allowed else "other"


def _country(destination: object) -> str:
    if not isinstance(destination, str) or len(destination) > 20:
        return "unknown"
    try:
        number = phonenumbers.parse(destination if destination.startswith("+") else "+" + destination)
    except phonenumbers.NumberParseException:
        return "unknown"
    return phonenumbers.region_code_for_number(number) or "unknown"


def _printable(value: object, limit: int) -> str:
    return "".join(c for c in str(value)[: limit * 4] if " " <= c <= "~")[:limit]


def parse(raw: bytes) -> Receipt | None:
    """8x8's ``outbound_message_status_changed`` body, or None when it is not one. Every label
    value is bounded to a known set, so no sender can grow the metrics."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    payload = body.get("payload") if isinstance(body, dict) else None
    if not isinstance(payload, dict) or body.get("eventType") != "outbound_message_status_changed":
        return None
    umid, status = payload.get("umid"), payload.get("status")
    if not isinstance(umid, str) or not 0 < len(umid) <= 64 or not _UMID_CHARS.issuperset(umid):
        return None
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        return None
    code = status.get("errorCode")
    error_code = "" if code is None else (
        str(code) if isinstance(code, int) and not isinstance(code, bool) and 0 <= code < 1000 else "other")
    state = _one_of(status["state"], STATES)
    reason = ""
    if state not in DELIVERED:
        reason = _printable(status.get("errorMessage") or status.get("detail") or state, _MAX_REASON)
    destination = payload.get("destination")
    return Receipt(umid=umid.lower(), state=state, detail=_one_of(status.get("detail"), DETAILS),
                   error_code=error_code, reason=reason, country=_country(destination),
                   recipient=mask_number(destination) if isinstance(destination, str) else "***")


def token_matches(tokens: list[str] | None, presented: str) -> bool:
    """Constant time in the presented token, whichever line matches (or none)."""
    given = presented.encode()
    found = False
    for token in tokens or ():
        found |= hmac.compare_digest(token.encode(), given)
    return found


# --- what the relay remembers between the send and its receipts ----------------------------
class ReceiptStore(Protocol):
    def sent(self, umid: str, at: float) -> Awaitable[None] | None:
        """Remember when 8x8 accepted ``umid`` (an awaitable when it goes to a shared store)."""
        ...

    async def first(self, umid: str, state: str) -> tuple[bool, float | None]:
        """(True the first time this umid+state is seen, when the message was accepted)."""
        ...


class MemoryReceipts:
    """Submit times and seen receipts of one process, bounded by count and age."""

    def __init__(self, limit: int = MAX_REMEMBERED, retention: float = RETENTION) -> None:
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._limit, self._retention = limit, retention

    def _remember(self, table: OrderedDict[str, float], key: str, value: float) -> None:
        table[key] = value
        table.move_to_end(key)
        horizon = time.time() - self._retention
        while table and (len(table) > self._limit or next(iter(table.values())) < horizon):
            table.popitem(last=False)

    def sent(self, umid: str, at: float) -> None:
        self._remember(self._sent, umid.lower(), at)

    async def first(self, umid: str, state: str) -> tuple[bool, float | None]:
        key = f"{umid}:{state}"
        if key in self._seen:
            return False, None
        self._remember(self._seen, key, time.time())
        return True, self._sent.get(umid)


class RedisReceipts:
    """The same, shared by every replica through the relay's state store (keys expire after
    8x8's 48 h). If the store does not answer, the receipt still counts (no time, maybe twice)."""

    def __init__(self, client: Any, prefix: str, retention: float = RETENTION) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415  redis only with a store (~7 MB)

        self._client, self._prefix, self._ttl = client, prefix, int(retention)
        self._errors = (RedisError, OSError)

    async def sent(self, umid: str, at: float) -> None:
        try:
            await self._client.set(f"{self._prefix}u:{umid.lower()}", repr(at), ex=self._ttl)
        except self._errors:  # a lost submit time costs one histogram sample only
            pass

    async def first(self, umid: str, state: str) -> tuple[bool, float | None]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(f"{self._prefix}d:{umid}:{state}", "1", nx=True, ex=self._ttl)
                pipe.get(f"{self._prefix}u:{umid}")
                fresh, sent_at = await pipe.execute()
        except self._errors:
            return True, None
        return bool(fresh), float(sent_at) if sent_at else None


class DeliveryWindow:
    """Sent / delivered / undelivered over the last ``SUMMARY_WINDOW`` seconds, in one-minute
    slots, and the most frequent failure reason."""

    def __init__(self, window: float = SUMMARY_WINDOW, clock=time.monotonic) -> None:
        self._slots: deque[tuple[int, Tally[str]]] = deque()
        self._window, self._clock = window, clock

    def _slot(self) -> Tally[str]:
        now = int(self._clock() // _BUCKET)
        if not self._slots or self._slots[-1][0] != now:
            self._slots.append((now, Tally()))
        while self._slots[0][0] <= now - self._window // _BUCKET:
            self._slots.popleft()
        return self._slots[-1][1]

    def add(self, what: str) -> None:
        self._slot()[what] += 1

    def summary(self) -> dict[str, Any]:
        self._slot()
        total: Tally[str] = Tally()
        for _, slot in self._slots:
            total.update(slot)
        delivered, undelivered = total.pop("delivered", 0), total.pop("undelivered", 0)
        sent = total.pop("sent", 0)
        reasons = {key[7:]: n for key, n in total.items() if key.startswith("reason:")}
        final = delivered + undelivered
        return {
            "windowSeconds": int(self._window), "sent": sent, "delivered": delivered,
            "undelivered": undelivered, "ratio": round(delivered / final, 4) if final else None,
            "topFailureReason": max(reasons, key=reasons.__getitem__) if reasons else "",
        }


class ReceiptMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.receipts = Counter("otp_relay_receipts", "Delivery receipts from 8x8 by state, detail, "
                                "error code and destination country (repeats counted once)",
                                ["state", "detail", "error_code", "country"], registry=registry)
        self.requests = Counter("otp_relay_receipt_requests", "Requests on the receipt path by "
                                "result", ["result"], registry=registry)
        self.delivery_time = Histogram(
            "otp_relay_delivery_seconds", "From 8x8 accepting a message to its delivered receipt",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600), registry=registry)
        self.ratio = Gauge("otp_relay_delivery_ratio", "Delivered / (delivered + undelivered) "
                           "receipts of the last 15 minutes in this process (NaN without any)",
                           registry=registry)


class Receipts:
    """The relay's receipt desk: the token file, the callback URL put on each send, and the
    recording of receipts (metrics, window) and of accepted sends."""

    def __init__(self, settings: Settings, store: ReceiptStore, registry: CollectorRegistry,
                 on_reload: Callable[[str, bool], None] = lambda name, ok: None) -> None:
        self.url = settings.receipt_url
        self.tokens = (WatchedFile("receipt_token", settings.receipt_token_file, parse_signing_keys, on_reload)
                       if settings.receipt_token_file else None)
        self.store = store
        self.window = DeliveryWindow()
        self._writes: set[asyncio.Future] = set()
        self.metrics = ReceiptMetrics(registry)
        self.metrics.ratio.set_function(self._ratio)

    def _ratio(self) -> float:
        ratio = self.window.summary()["ratio"]
        return float("nan") if ratio is None else ratio

    def refresh(self) -> None:
        if self.tokens is not None:
            self.tokens.refresh()

    def callback_url(self) -> str | None:
        """``<receipt URL>/<newest token>``, or None when receipts are not set up."""
        tokens = self.tokens.value if self.tokens is not None else None
        return f"{self.url}/{tokens[-1]}" if self.url and tokens else None

    def sent(self, umid: str) -> None:
        """On the send path: never holds the answer up for a shared store. Submit times are
        kept only when sends ask for receipts."""
        self.window.add("sent")
        if not self.url:
            return
        pending = self.store.sent(umid, time.time())
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def record(self, receipt: Receipt) -> dict[str, object]:
        """Count a receipt once; the log fields of what happened."""
        fresh, sent_at = await self.store.first(receipt.umid, receipt.state)
        fields: dict[str, object] = {"umid": receipt.umid, "recipient": receipt.recipient,
                                     "country": receipt.country, "state": receipt.state}
        if not fresh:
            self.metrics.requests.labels("duplicate").inc()
            fields["outcome"] = "duplicate"
            return fields
        self.metrics.requests.labels("counted").inc()
        self.metrics.receipts.labels(receipt.state, receipt.detail, receipt.error_code, receipt.country).inc()
        fields["outcome"] = "counted"
        if receipt.state in DELIVERED:
            self.window.add("delivered")
            if sent_at is not None:
                seconds = max(0.0, time.time() - sent_at)
                self.metrics.delivery_time.observe(seconds)
                fields["duration_ms"] = round(seconds * 1000)
        elif receipt.state in FAILED:
            self.window.add("undelivered")
            self.window.add("reason:" + receipt.reason)
            fields["detail"] = receipt.reason
        return fields


def store_for(state: Any, prefix: str) -> ReceiptStore:
    """Shared through the relay's Redis when it has one, else in process."""
    client = getattr(state, "client", None)
    return RedisReceipts(client, f"{{{prefix}}}:receipt:") if client is not None else MemoryReceipts()


# --- HTTP (aiohttp) -------------------------------------------------------------------------
async def handle(relay: Any, request: Any) -> Any:
    """``POST <prefix>/v1/receipts/{token}``: 404 exactly like an unknown path for a wrong token,
    200 for every receipt (counted or a repeat), 400 for a body that is not one, 413 too big."""
    from aiohttp import web  # noqa: PLC0415  the only aiohttp-specific part

    desk: Receipts = relay.receipts
    if not token_matches(desk.tokens.value if desk.tokens else None, request.match_info["token"]):
        desk.metrics.requests.labels("bad_token").inc()
        raise web.HTTPNotFound()
    relay.guard.request_started(request.transport)
    try:
        async with asyncio.timeout(relay.settings.body_timeout):
            raw = await request.read()  # bounded by the application's client_max_size
        relay.guard.body_received(request.transport)
        if len(raw) > MAX_RECEIPT:
            raise web.HTTPRequestEntityTooLarge(MAX_RECEIPT, len(raw))
        receipt = parse(raw)
        if receipt is None:
            desk.metrics.requests.labels("invalid").inc()
            return web.Response(status=400, text="not an 8x8 delivery receipt")
        fields = await desk.record(receipt)
    except web.HTTPRequestEntityTooLarge:
        desk.metrics.requests.labels("too_large").inc()
        return web.Response(status=413, text="receipt too large")
    except TimeoutError:
        desk.metrics.requests.labels("timeout").inc()
        return web.Response(status=408, text="the body did not arrive in time")
    except OSError:  # the sender hung up mid-body (or the guard dropped it): nobody to answer
        desk.metrics.requests.labels("client_abort").inc()
        return web.Response(status=499, text="the connection closed before the body arrived")
    finally:
        relay.guard.request_finished(request.transport)
    receipt_log.info("receipt", fields)
    return web.json_response({"status": "ok"})


async def summary(relay: Any, request: Any) -> Any:
    """``GET /v1/delivery-summary`` on the admin listener (read by the operator)."""
    from aiohttp import web  # noqa: PLC0415

    return web.json_response(relay.receipts.window.summary())


def add_admin_route(relay: Any, app: Any) -> None:
    app.router.add_get(SUMMARY_PATH, lambda request: summary(relay, request))
