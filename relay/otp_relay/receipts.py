"""8x8 delivery receipts: did the SMS reach the phone?

Every send carries ``dlrCallbackUrl = <receipt URL>/<token>`` (the newest line of the receipt
token file); 8x8 POSTs one JSON receipt per status change there and retries on any error for
up to 48 h. Receipts are not signed, so the token in the path is the only proof, and a token
can leak (it sits in a URL): it is compared in constant time against the newest line and the
lines it superseded less than ``TOKEN_GRACE`` ago; a wrong or retired one gets the same plain
404 as a path that does not exist. A receipt is answered 200 at once (8x8 would retry anything
else).

A receipt counts only for a message this relay sent (its umid was recorded when 8x8 accepted
it), once per umid + state; everything the metrics and the summary show comes from the relay's
own record (the recipient's country) or from fixed sets (state, detail, 8x8's documented error
codes and their reasons), so a forged receipt can neither grow a metric nor fake health nor
put its text anywhere. A receipt for a umid the relay does not know (yet) is answered 503 (8x8
retries it: a real one may have overtaken the send's answer) and only counted by result.

Voice calls report the same way: 8x8's Voice Session Summary (VSS) for a call this relay placed
(its ``sessionId`` recorded at send time, like a umid) is posted to the same path with the same
token (8x8 takes one VSS webhook URL per subaccount: ``<receipt URL>/<token>``, which the relay
sets itself, see ``webhook``). COMPLETED (the
call was answered and played) counts as delivered; NO_ANSWER, BUSY, FAILED, CANCELED and ERROR
as undelivered with that reason. Every series and summary figure carries ``channel`` (``text``
or ``voice``); a session id recorded for an SMS (or a umid for a call) is not that channel's
and counts as ``unknown_umid``, so neither can mark the other's states as seen.

Parsing, token check, de-duplication and the delivery window are framework independent; the
aiohttp handler at the end is thin.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections import Counter as Tally, OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .canary import shown as canary_shown
from .config import Settings
from .keys import WatchedFile
from .logs import LineBudget, RequestLog
from .metrics import CHANNELS
from .tally import MinuteTally
from .upstream import valid_umid

if TYPE_CHECKING:
    from aiohttp import web

    from .pipeline import Intake

MAX_RECEIPT = 8 * 1024  # bytes; 8x8's receipts are well under 1 KiB
MAX_REMEMBERED = 100_000  # sent umids kept in process (with the states seen for each)
RETENTION = 48 * 3600  # seconds: 8x8 sends no receipt later than this
TOKEN_GRACE = 48 * 3600  # seconds a superseded receipt token still works (8x8's receipt window)
STATES = ("queued", "rejected", "sent", "delivered", "undelivered", "read")  # 8x8's status reference
DETAILS = ("delivered_to_operator", "delivered_to_recipient", "rejected_by_operator",
           "undelivered_to_recipient")
DELIVERED = frozenset({"delivered"})
FAILED = frozenset({"undelivered", "rejected"})
SUMMARY_WINDOW = 15 * 60  # seconds the delivery summary covers
# 8x8's "SMS Delivery Receipt Error Codes" (and 99, Omni Shield's "Rejected by 8x8"): every other
# code is folded to "other", so the error_code label and the failure reasons are fixed sets.
ERROR_REASONS = {
    0: "No reason code", 1: "Absent subscriber", 2: "Content related error", 3: "Data missing",
    4: "Deferred delivery", 5: "Pending upstream", 7: "Delivery failure", 8: "Deny",
    9: "Equipment protocol error", 10: "ESME external error", 11: "Flooding", 12: "HLR error",
    13: "Illegal subscriber or equipment", 14: "Internal error", 15: "Invalid destination",
    16: "Invalid format", 17: "Invalid message length", 18: "Invalid parameter",
    19: "Invalid source address", 20: "Local cancel", 21: "Memory capacity exceeded",
    22: "Message being retried", 23: "Network failure", 24: "Age verification failure",
    25: "Operation aborted by receiving network or user", 26: "Operation barred",
    27: "Permanent operator error", 28: "Permanent phone error", 29: "Phone related error",
    30: "Portability error", 31: "Premium SMS error", 32: "Roaming subscriber", 33: "Route error",
    34: "Screening error", 35: "Service center congestion", 36: "SMS expired",
    37: "SMS facility not supported", 38: "SMS malformed", 39: "SMSC cancel", 40: "SMSC error",
    41: "SMSC reject", 42: "Source credit insufficiency", 43: "Spam filter",
    44: "Subscriber billing issue", 45: "Subscriber busy for SMS", 46: "Subscriber not reachable",
    47: "Subscriber temporary unavailable", 48: "System failure", 49: "TCAP error",
    50: "Throttling error", 51: "Time out error", 52: "Unable to decode the response",
    53: "Unexpected data value", 54: "Unexpected error", 55: "Unidentified subscriber",
    56: "Unknown delivery state", 57: "Unknown error", 58: "Unknown service center",
    59: "Unknown subscriber", 60: "Content filtered", 61: "Session expired", 99: "Rejected by 8x8",
}
# 8x8's Voice Session Summary: sessionStatus -> (detail label, failure reason); COMPLETED is the
# delivered one (the call was answered and its message played)
VOICE_STATUSES = {
    "COMPLETED": ("completed", ""), "NO_ANSWER": ("no_answer", "No answer"), "BUSY": ("busy", "Busy"),
    "FAILED": ("failed", "Call failed"), "CANCELED": ("canceled", "Call canceled"),
    "ERROR": ("error", "8x8 voice error"),
}
VOICE_DETAILS = tuple(detail for detail, _ in VOICE_STATUSES.values())
# 8x8's "Voice Error Codes" (a session summary's errorDetails.errorCode); others fold to "other"
VOICE_ERROR_REASONS = {
    -2001: "An internal error has occurred", -2002: "An internal connectivity error has occurred",
    -2003: "The call flow provided is invalid", -2004: "No coverage available for requested area",
    -2005: "Unable to synthesize text to speech", -2006: "Unable to download file for playback",
    -2007: "The validity period of the call flow request has expired",
    -2008: "The provided source MSISDN or caller ID is not whitelisted",
    -2009: "The scenario parameters provided is invalid", -2010: "The trunk capacity has been exceeded",
    -9999: "An unknown error has occurred",
}
TOP_REASONS = 5  # failure reasons the summary ranks (from the fixed set above)
receipt_log = RequestLog("otp_relay.receipt")
RECEIPT_PATH = "/v1/receipts"
SUMMARY_PATH = "/v1/delivery-summary"


@dataclass(frozen=True)
class Receipt:
    umid: str  # lowercase
    state: str  # one of STATES, or "other"
    detail: str  # one of DETAILS, "other" or ""
    error_code: str  # "" (none), a code of ERROR_REASONS as text, or "other"
    reason: str  # why it failed, from ERROR_REASONS (or "Other error code" / the state); "" when delivered
    channel: str = "text"  # "text": an SMS receipt (umid); "voice": a call's session summary (sessionId)


def _one_of(value: object, allowed: tuple[str, ...], absent: str = "") -> str:
    if value is None:
        return absent
    return value if isinstance(value, str) and value in allowed else "other"


def parse(raw: bytes) -> Receipt | None:
    """8x8's ``outbound_message_status_changed`` body (an SMS receipt) or its VOICE
    ``SESSION_SUMMARY`` (a call's outcome), or None when it is neither. Every value kept is
    bounded to a known set; the sender's free text (destination, errorMessage, errorMsg) is
    never kept."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    payload = body.get("payload") if isinstance(body, dict) else None
    if not isinstance(payload, dict):
        return None
    if body.get("namespace") == "VOICE" and body.get("eventType") == "SESSION_SUMMARY":
        return _session_summary(payload)
    if body.get("eventType") != "outbound_message_status_changed":
        return None
    umid, status = payload.get("umid"), payload.get("status")
    if not valid_umid(umid):
        return None
    if not isinstance(status, dict) or not isinstance(status.get("state"), str):
        return None
    code = status.get("errorCode")
    known = _known_code(code, ERROR_REASONS)
    error_code = "" if code is None else (str(code) if known is not None else "other")
    state = _one_of(status["state"], STATES)
    reason = ""
    if state not in DELIVERED:
        reason = ERROR_REASONS[known] if known is not None else ("Other error code" if code is not None else state)
    return Receipt(umid=umid.lower(), state=state, detail=_one_of(status.get("detail"), DETAILS),
                   error_code=error_code, reason=reason)


def _known_code(code: object, reasons: dict[int, str]) -> int | None:
    """8x8's error code when it is one of ``reasons`` (never a bool: JSON true is not code 1)."""
    return code if isinstance(code, int) and not isinstance(code, bool) and code in reasons else None


def _session_summary(payload: dict) -> Receipt | None:
    session, status = payload.get("sessionId"), payload.get("sessionStatus")
    if not valid_umid(session) or not isinstance(status, str):
        return None
    detail, reason = VOICE_STATUSES.get(status, ("other", "Other call status"))
    errors = payload.get("errorDetails")
    code = errors.get("errorCode") if isinstance(errors, dict) else None
    known = _known_code(code, VOICE_ERROR_REASONS)
    error_code = "" if code is None else (str(code) if known is not None else "other")
    if known is not None and status == "ERROR":
        reason = VOICE_ERROR_REASONS[known]
    return Receipt(umid=session.lower(), state="delivered" if status == "COMPLETED" else "undelivered",
                   detail=detail, error_code=error_code, reason=reason, channel="voice")


def token_matches(tokens: list[str] | None, presented: str) -> bool:
    """Constant time in the presented token, whichever line matches (or none)."""
    given = presented.encode()
    found = False
    for token in tokens or ():
        found |= hmac.compare_digest(token.encode(), given)
    return found


class ReceiptTokens:
    """The token file: the newest line goes on sends; every line is accepted, the older ones
    only until ``TOKEN_GRACE`` after the relay saw them superseded (for lines already superseded
    when the relay starts: since the file's modification time)."""

    def __init__(self, watched: WatchedFile, grace: float = TOKEN_GRACE, clock=time.time) -> None:
        self.file, self._grace, self._clock = watched, grace, clock
        self._superseded: dict[str, float] = {}
        self._seen: list[str] | None = None

    @property
    def newest(self) -> str | None:
        tokens = self.file.value
        return tokens[-1] if tokens else None

    def refresh(self) -> None:
        self.file.refresh()
        tokens = self.file.value
        if tokens is self._seen or not tokens:
            return
        if self._seen is None:  # at start: superseded when the file was written
            try:
                since = os.stat(self.file.path).st_mtime
            except OSError:
                since = self._clock()
        else:
            since = self._clock()
        self._superseded = {t: self._superseded.get(t, since) for t in tokens[:-1]}
        self._seen = tokens

    def accepted(self) -> list[str]:
        tokens = self.file.value or []
        horizon = self._clock() - self._grace
        return [t for t in tokens[:-1] if self._superseded.get(t, 0.0) > horizon] + tokens[-1:]


# --- what the relay remembers between the send and its receipts ----------------------------
class ReceiptStore(Protocol):
    def sent(self, umid: str, at: float, country: str, channel: str = "text") -> Awaitable[None] | None:
        """Remember that 8x8 accepted ``umid`` (an SMS's umid, or a call's sessionId with
        ``channel`` "voice"; an awaitable when it goes to a shared store)."""
        ...

    async def first(self, umid: str, state: str, channel: str = "text") -> tuple[str, float | None, str]:
        """("counted" the first time this state of a sent umid is seen, "duplicate" after,
        "unknown_umid" for a umid this relay did not send on ``channel``), when it was sent,
        its country."""
        ...


@dataclass(slots=True)
class _Sent:
    at: float
    country: str
    states: int = 0  # bit per index in STATES (+ "other"): the states seen
    channel: str = "text"


def _state_bit(state: str) -> int:
    return 1 << (STATES.index(state) if state in STATES else len(STATES))


class MemoryReceipts:
    """Sent umids of one process (with the states seen for each), bounded by count and age."""

    def __init__(self, limit: int = MAX_REMEMBERED, retention: float = RETENTION) -> None:
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self._limit, self._retention = limit, retention

    def _expire(self) -> None:
        table, horizon = self._sent, time.time() - self._retention
        while table and (len(table) > self._limit or next(iter(table.values())).at < horizon):
            table.popitem(last=False)

    def sent(self, umid: str, at: float, country: str, channel: str = "text") -> None:
        self._sent[umid.lower()] = _Sent(at, country, channel=channel)
        self._sent.move_to_end(umid.lower())
        self._expire()

    async def first(self, umid: str, state: str, channel: str = "text") -> tuple[str, float | None, str]:
        self._expire()
        record = self._sent.get(umid)
        if record is None or record.channel != channel:
            return "unknown_umid", None, ""
        bit = _state_bit(state)
        if record.states & bit:
            return "duplicate", record.at, record.country
        record.states |= bit
        return "counted", record.at, record.country


# KEYS: the sent umid's hash; ARGV: the state, the channel. Nothing is written for a umid never
# sent on that channel (records without 'ch' are SMS ones, from before voice).
_FIRST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if (redis.call('HGET', KEYS[1], 'ch') or 'text') ~= ARGV[2] then return false end
local fresh = redis.call('HSETNX', KEYS[1], 's:' .. ARGV[1], '1')
return {fresh, redis.call('HGET', KEYS[1], 't') or '', redis.call('HGET', KEYS[1], 'c') or ''}
"""


class RedisReceipts:
    """The same, shared by every replica through the relay's state store: one hash per sent
    umid (when, country, states seen), expiring 48 h after the send. If the store does not
    answer, the receipt is not counted (a forged one must never count)."""

    def __init__(self, client: Any, prefix: str, retention: float = RETENTION) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415  redis only with a store (~7 MB)

        self._client, self._prefix, self._ttl = client, prefix, int(retention)
        self._errors = (RedisError, OSError)
        self._first = client.register_script(_FIRST)

    async def sent(self, umid: str, at: float, country: str, channel: str = "text") -> None:
        key = f"{self._prefix}u:{umid.lower()}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:  # never a key without TTL
                pipe.hset(key, mapping={"t": repr(at), "c": country, "ch": channel})
                pipe.expire(key, self._ttl)
                await pipe.execute()
        except self._errors:  # a lost record costs the receipts of one message
            pass

    async def first(self, umid: str, state: str, channel: str = "text") -> tuple[str, float | None, str]:
        try:
            found = await self._first(keys=[f"{self._prefix}u:{umid}"], args=[state, channel])
        except self._errors:
            return "unavailable", None, ""
        if not found:
            return "unknown_umid", None, ""
        fresh, sent_at, country = found
        return ("counted" if int(fresh) else "duplicate"), float(sent_at) if sent_at else None, country


class DeliveryWindow:
    """Sent / delivered / undelivered over the last ``SUMMARY_WINDOW`` seconds, in one-minute
    slots, and the most frequent failure reason: in all, and per channel (text, voice)."""

    def __init__(self, window: float = SUMMARY_WINDOW, clock=time.monotonic) -> None:
        self._tally = MinuteTally(window, clock)
        self._window = window

    def add(self, what: str, channel: str = "text") -> None:
        self._tally.add(what, f"{channel}|{what}")

    @staticmethod
    def _figures(total: Tally[str], prefix: str = "") -> dict[str, Any]:
        delivered, undelivered = total[prefix + "delivered"], total[prefix + "undelivered"]
        start = len(prefix) + 7
        reasons = {key[start:]: n for key, n in total.items() if key.startswith(prefix + "reason:")}
        final = delivered + undelivered
        return {
            "sent": total[prefix + "sent"], "delivered": delivered, "undelivered": undelivered,
            "ratio": round(delivered / final, 4) if final else None,
            "topFailureReason": max(reasons, key=reasons.__getitem__) if reasons else "",
        }

    def summary(self) -> dict[str, Any]:
        """The figures of text and voice together (the fields the operator reads), and under
        ``channels`` each channel's own."""
        total = self._tally.total()
        return {"windowSeconds": int(self._window), **self._figures(total),
                "channels": {channel: self._figures(total, channel + "|") for channel in CHANNELS}}


class ReceiptMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.receipts = Counter("otp_relay_receipts", "Delivery receipts from 8x8 (SMS receipts, and "
                                "call session summaries: channel voice) by state, detail, error code "
                                "and destination country (repeats counted once)",
                                ["state", "detail", "error_code", "country", "channel"], registry=registry)
        self.requests = Counter("otp_relay_receipt_requests", "Requests on the receipt path by "
                                "result", ["result"], registry=registry)
        self.delivery_time = Histogram(
            "otp_relay_delivery_seconds", "From 8x8 accepting a message to its delivered receipt "
            "(channel voice: from 8x8 creating the call to the summary of the answered call)",
            ["channel"], buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600), registry=registry)
        self.ratio = Gauge("otp_relay_delivery_ratio", "Delivered / (delivered + undelivered) "
                           "receipts of the last 15 minutes in this process (NaN without any)",
                           registry=registry)


class Receipts:
    """The relay's receipt desk: the token file, the callback URL put on each send, and the
    recording of receipts (metrics, window) and of accepted sends."""

    def __init__(self, settings: Settings, store: ReceiptStore, registry: CollectorRegistry,
                 tokens: ReceiptTokens | None = None) -> None:
        self.url = settings.receipt_url
        self.tokens = tokens  # reloaded with the other credentials (``credentials.Credentials``)
        self.store = store
        self.window = DeliveryWindow()
        self._writes: set[asyncio.Future] = set()
        self.metrics = ReceiptMetrics(registry)
        self.metrics.ratio.set_function(self._ratio)
        self.log_budget = LineBudget()  # lines of receipts that did not count (anyone can send them)
        self.canary: Any = None  # the canary's record (``canary.CanaryStore``), set by the relay

    def _ratio(self) -> float:
        ratio = self.window.summary()["ratio"]
        return float("nan") if ratio is None else ratio

    def accepts(self, token: str) -> bool:
        return token_matches(self.tokens.accepted() if self.tokens is not None else None, token)

    def callback_url(self) -> str | None:
        """``<receipt URL>/<newest token>``, or None when receipts are not set up."""
        newest = self.tokens.newest if self.tokens is not None else None
        return f"{self.url}/{newest}" if self.url and newest else None

    def sent(self, umid: str, country: str, channel: str = "text") -> None:
        """On the send path: never holds the answer up for a shared store. Sent umids are
        kept only when receipts are set up. ``channel``: "text" (an SMS, ``umid``) or
        "voice" (a call, its ``sessionId``)."""
        self.window.add("sent", channel)
        if not self.url:
            return
        pending = self.store.sent(umid, time.time(), country, channel)
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def record(self, receipt: Receipt) -> dict[str, object]:
        """Count a receipt of a sent message once; the log fields of what happened."""
        channel = receipt.channel
        result, sent_at, country = await self.store.first(receipt.umid, receipt.state, channel)
        self.metrics.requests.labels(result).inc()
        fields: dict[str, object] = {"umid": receipt.umid, "state": receipt.state, "outcome": result,
                                     "channel": channel}
        if result != "counted":
            return fields
        fields["country"] = country
        self.metrics.receipts.labels(receipt.state, receipt.detail, receipt.error_code, country, channel).inc()
        if receipt.state in DELIVERED:
            self.window.add("delivered", channel)
            if sent_at is not None:
                seconds = max(0.0, time.time() - sent_at)
                self.metrics.delivery_time.labels(channel).observe(seconds)
                fields["duration_ms"] = round(seconds * 1000)
        elif receipt.state in FAILED:
            self.window.add("undelivered", channel)
            self.window.add("reason:" + receipt.reason, channel)
            fields["detail"] = receipt.reason
        if self.canary is not None and channel == "text" and receipt.state in DELIVERED | FAILED:  # only counted receipts
            await self.canary.receipt(receipt.umid, receipt.state, receipt.error_code, receipt.reason)
        return fields

    def log(self, fields: dict[str, object]) -> None:
        """Counted receipts (at most a few per sent message) are always logged; the others
        within a budget of lines per second."""
        if fields.get("outcome") != "counted":
            left_out = self.log_budget.take()
            if left_out is None:
                return
            if left_out:
                fields["suppressed"] = left_out
        receipt_log.info("receipt", fields)


def store_for(state: Any, prefix: str) -> ReceiptStore:
    """Shared through the relay's Redis when it has one, else in process."""
    client = getattr(state, "client", None)
    return RedisReceipts(client, f"{{{prefix}}}:receipt:") if client is not None else MemoryReceipts()


# --- HTTP (aiohttp) -------------------------------------------------------------------------
async def handle(desk: Receipts, intake: Intake, request: web.Request) -> web.Response:
    """``POST <prefix>/v1/receipts/{token}``: 404 exactly like an unknown path for a wrong token,
    200 for a receipt of a sent message (counted or a repeat), 503 for one of a umid not known
    (yet), 400 for a body that is not one, 413 too big. The connection guard's bookkeeping and
    the bounded body read are the send path's (``intake``)."""
    from aiohttp import web  # noqa: PLC0415  the only aiohttp-specific part

    if not desk.accepts(request.match_info["token"]):
        desk.metrics.requests.labels("bad_token").inc()
        raise web.HTTPNotFound()
    try:
        with intake.serving(request):
            raw = await intake.read(request)  # bounded by the application's client_max_size
            if len(raw) > MAX_RECEIPT:
                raise web.HTTPRequestEntityTooLarge(MAX_RECEIPT, len(raw))
            receipt = parse(raw)
            if receipt is None:
                desk.metrics.requests.labels("invalid").inc()
                return web.Response(status=400, text="not an 8x8 delivery receipt or voice session summary")
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
    desk.log(fields)
    if fields["outcome"] in ("unknown_umid", "unavailable"):
        # Not (yet) a message this relay knows: its receipt can come before the relay has read
        # 8x8's answer to the send, or reach a replica before the shared record. 8x8 retries
        # after 1, 10, 30 and 90 s, so a real receipt is counted on a retry; a forged one
        # never is. Nothing is stored for it either way.
        return web.Response(status=503, headers={"Retry-After": "1"}, text="unknown message")
    return web.json_response({"status": "ok"})


async def summary(relay: Any, request: Any) -> Any:
    """``GET /v1/delivery-summary`` on the admin listener (read by the operator)."""
    from aiohttp import web  # noqa: PLC0415

    answer = relay.receipts.window.summary()
    if relay.settings.voice_enabled:  # where 8x8 posts call outcomes (webhook.STATES)
        answer["voiceWebhook"] = relay.voice_webhook.state
    if relay.canary is not None and (shown := canary_shown(await relay.canary.last())) is not None:
        answer["canary"] = shown
    if relay.conversion.enabled:  # issue 26 (conversion.Tracker); absent: tracking is off
        answer["conversion"] = await relay.conversion.summary()
    return web.json_response(answer)


def add_admin_route(relay: Any, app: Any) -> None:
    async def handler(request: Any) -> Any:  # aiohttp deprecates plain callables as handlers
        return await summary(relay, request)

    app.router.add_get(SUMMARY_PATH, handler)
