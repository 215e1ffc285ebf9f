"""One send, ``POST /v1/messages``, as four steps each returning a typed value:

- ``admit``: every check before a message may go to 8x8, cheapest first (readiness, body,
  signature, in-flight cap, JSON, policy): an ``OtpRequest`` or the ``Problem`` to answer;
- ``claim``: the state store's ``Verdict`` on the idempotency key and the limits (a ``Problem``
  when the store cannot decide);
- ``deliver``: the SMS or call to 8x8, its ``Outcome``;
- ``settle``: what came of the claimed key, told to the store.

``SendPipeline.handle`` runs them and turns the result into one ``Answer`` and one ``SendLog``
(the request's JSON log line). A step added to the pipeline goes in ``_send``: before the
limits means before ``claim``, after a successful send means after ``settle`` when the outcome
is ``Accepted``.

``Intake`` is the connection guard's bookkeeping of a request and the bounded read of its body;
the receipt path (``receipts.handle``) goes through the same one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import assert_never

import orjson
from aiohttp import web

from . import canary, messages, outcomes, policy as sms_policy, signing
from .config import Settings
from .connections import MAX_BODY, ConnectionGuard
from .conversion import BLOCKED_DETAIL, BLOCKED_TYPE, Tracker
from .credentials import Credentials
from .limits import retry_after_header
from .logs import LineBudget, RequestLog, mask_number
from .metrics import RelayMetrics
from .problems import CONTENT_TYPE as PROBLEM_JSON, Problem
from .receipts import Receipts
from .state import (
    ACCEPTED,
    RELEASE,
    UNKNOWN,
    VOICE_RECIPIENT,
    Full,
    InFlight,
    Limited,
    MaybeSent,
    Proceed,
    Replay,
    State,
    StateUnavailable,
    Verdict,
    recipient_tag,
)
from .upstream import Accepted, EightByEight, NotSent, Outcome, Rejected, Unknown

log = logging.getLogger("otp_relay.request")
request_log = RequestLog()

_OUTCOME_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 408: "timeout", 409: "in_flight",
    413: "too_large", 415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
    502: "upstream_rejected", 503: "upstream_unavailable", 504: "outcome_unknown",
}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(slots=True)
class SendLog:
    """The send's log line (fields in this order; None is left out), plus two facts that only
    steer what happens to it: ``authenticated`` (budgeted logging otherwise) and ``close``."""

    request_id: str
    worker: int | None = None
    channel: str | None = None
    segments: int | None = None
    recipient: str | None = None
    country: str | None = None
    would_refuse: str | None = None
    attempts: int | None = None
    state: str | None = None
    idempotent: str | None = None
    umid: str | None = None
    upstream: str | None = None
    detail: str | None = None
    outcome: str | None = None
    status: int | None = None
    duration_ms: float | None = None
    suppressed: int | None = None
    authenticated: bool = field(default=False, compare=False)
    close: bool = field(default=False, compare=False)

    def line(self) -> dict[str, object]:
        line = {}
        for name in _LOGGED:
            value = getattr(self, name)
            if value is not None:
                line[name] = value
        return line

    def flag(self, rule: str) -> None:
        self.would_refuse = ",".join(filter(None, (self.would_refuse, rule)))


_LOGGED = tuple(name for name in SendLog.__slots__ if name not in ("authenticated", "close"))


class RequestIds:
    """Request ids: 32 hex digits of ``os.urandom`` each, read ``batch`` ids at a time (one
    ``getrandom`` call per batch instead of one per request). One per pipeline, so forked
    workers never share a pool."""

    __slots__ = ("_pool", "_at", "_size")

    def __init__(self, batch: int = 256) -> None:
        self._pool, self._at, self._size = "", 0, 16 * batch

    def next(self) -> str:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(self._size).hex(), 0
        self._at = at + 32
        return self._pool[at:at + 32]


class StoreHealth:
    """Whether the state store answers (always, in process); a shared one is checked on every
    refresh and marked down by any send it failed."""

    def __init__(self, state: State, metrics: RelayMetrics) -> None:
        self.ok = state.scope == "process"
        self._metrics = metrics

    def answered(self, ok: bool) -> None:
        if ok != self.ok:
            log.warning("state store " + ("reachable again" if ok else "unreachable: refusing sends"))
        self.ok = ok
        self._metrics.state_up.set(1 if ok else 0)
        if not ok:
            self._metrics.state_errors.inc()


class Intake:
    """A request on the guard's books from its headers to its answer, and its body read within
    ``timeout`` (raises ``TimeoutError``; ``OSError`` when the client hung up or the guard
    dropped it; ``web.HTTPRequestEntityTooLarge`` past the application's ``client_max_size``)."""

    def __init__(self, guard: ConnectionGuard, timeout: float) -> None:
        self.guard, self.timeout = guard, timeout

    @contextmanager
    def serving(self, request: web.Request) -> Iterator[None]:
        transport = request.transport
        self.guard.request_started(transport)
        try:
            yield
        finally:
            self.guard.request_finished(transport)

    async def read(self, request: web.Request, limit: int | None = None) -> bytes:
        """The body; ``limit``: at most that many bytes instead of the application's
        ``client_max_size`` (the log-stream sink's batches are larger than a send)."""
        if request.content.is_eof():  # the body came with the headers: no timer to arm
            raw = await _body(request, limit)
        else:
            async with asyncio.timeout(self.timeout):
                raw = await _body(request, limit)
        self.guard.body_received(request.transport)
        return raw


async def _body(request: web.Request, limit: int | None) -> bytes:
    if limit is None:
        return await request.read()
    parts: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(limit, size)
        parts.append(chunk)
    return b"".join(parts)


class SendPipeline:
    def __init__(self, settings: Settings, credentials: Credentials, state: State, health: StoreHealth,
                 metrics: RelayMetrics, intake: Intake, receipts: Receipts, canary_store: canary.CanaryStore | None,
                 upstream: EightByEight, voice_upstream: EightByEight | None,
                 ready: Callable[[], bool], worker: int | None = None,
                 conversion: Tracker | None = None) -> None:
        self.settings, self.credentials, self.state, self.health = settings, credentials, state, health
        self.metrics, self.intake, self.receipts, self.canary = metrics, intake, receipts, canary_store
        self.conversion = conversion  # None: tracking off
        self.upstream, self.voice_upstream, self._ready, self._worker = upstream, voice_upstream, ready, worker
        self.in_flight = 0
        self.rejections_log = LineBudget()
        self.numbers = sms_policy.NumberPolicy(settings.allowed_number_types, settings.allowed_non_geographic)
        self._base_payload: dict[str, object] = {"encoding": settings.encoding}
        if settings.sender:
            self._base_payload["source"] = settings.sender
        self._request_ids = RequestIds()
        self._expiry: tuple[int, str] = (-1, "")  # (whole second, 8x8's expiry for it)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        request_id = self._request_ids.next()
        entry = SendLog(request_id, worker=self._worker)
        guard, transport = self.intake.guard, request.transport
        try:
            guard.request_started(transport)  # Intake.serving, without a generator per request
            try:
                answer = await self._send(request, entry, started)
            finally:
                guard.request_finished(transport)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            entry.outcome = "internal_error"
            answer = _problem(Problem(500, "Internal error", "the relay failed to process the request"), request_id)
        outcome = entry.outcome or ("accepted" if answer.status == 202
                                    else _OUTCOME_BY_STATUS.get(answer.status, "bad_request"))
        self.metrics.outcome(outcome, entry.channel)
        entry.outcome, entry.status = outcome, answer.status
        entry.duration_ms = round((time.monotonic() - started) * 1000, 2)
        self._log(entry)
        response = web.Response(status=answer.status, body=answer.body,
                                headers={**answer.headers, "X-Request-Id": request_id})
        if entry.close:
            response.force_close()
        return response

    def _log(self, entry: SendLog) -> None:
        """Every authenticated request is logged; others (anyone on the internet can send
        them) within a budget of lines per second."""
        if not entry.authenticated:
            left_out = self.rejections_log.take()
            if left_out is None:
                self.metrics.log_suppressed.inc()
                return
            if left_out:
                entry.suppressed = left_out
        request_log.info("send", entry.line())

    async def _send(self, request: web.Request, entry: SendLog, started: float) -> Answer:
        otp = await self.admit(request, entry)
        if isinstance(otp, Problem):
            if entry.detail is None:
                entry.detail = otp.detail
            return _problem(otp, entry.request_id)
        self.in_flight += 1  # only signed requests past every check count (no await since the cap)
        try:
            entry.recipient, entry.country = self._shown(otp.recipient), otp.country
            api_key = self.credentials.api_key.value
            if api_key is None:
                entry.outcome = "not_ready"
                return _problem(_NOT_READY, entry.request_id)
            if (refused := await self.gate(otp, entry)) is not None:
                return _problem(refused, entry.request_id)
            verdict = await self.claim(otp, entry)
            if isinstance(verdict, Problem):
                return _problem(verdict, entry.request_id)
            if not isinstance(verdict, Proceed):
                if otp.recipient == self.settings.canary_number and isinstance(verdict, Limited):
                    await self._canary_attempt("capped")
                return self.known(verdict, entry, otp.delivery)
            for rule in verdict.would_refuse:
                self._monitored(rule, entry)
            outcome = await self.deliver(otp, api_key, entry, started)
            await self.settle(otp.idempotency_key, outcome, entry)
            return self.answer(outcome, otp, entry)
        finally:
            self.in_flight -= 1

    # --- admit -------------------------------------------------------------------------
    async def admit(self, request: web.Request, entry: SendLog) -> messages.OtpRequest | Problem:
        """Every check before the message may go to 8x8, cheapest and most basic first; nothing
        before the signature check holds more than a connection and a body reader."""
        if not self._ready():
            entry.outcome = "state_unavailable" if not self.health.ok else "not_ready"
            return _STATE_UNAVAILABLE if not self.health.ok else _NOT_READY
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            return _COMPRESSED
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _TOO_LARGE
        try:
            raw = await self.intake.read(request)
        except web.HTTPRequestEntityTooLarge:
            return _TOO_LARGE
        except TimeoutError:
            entry.close = True  # the rest of the body is not worth waiting for
            return _BODY_TIMEOUT
        except OSError:  # the client hung up (or the guard dropped it) mid-body: nobody to answer
            entry.outcome, entry.close = "client_abort", True
            return _CLIENT_GONE
        timestamp, now = request.headers.get("X-Otp-Timestamp"), time.time()
        digest = signing.verify(self.credentials.verifier_keys(), timestamp,
                                request.headers.get("X-Otp-Signature"), raw, now)
        if isinstance(digest, signing.Failure):
            entry.detail = digest.value
            return _UNAUTHORIZED
        entry.authenticated = True
        if self.in_flight >= self.settings.max_in_flight:
            entry.outcome = "overloaded"
            return _BUSY
        if request.content_type != "application/json":
            return _UNSUPPORTED
        otp = messages.parse(raw, voice=self.settings.voice_enabled)
        if isinstance(otp, Problem):
            return otp
        entry.channel = otp.delivery
        return self._policy(otp, entry)

    def _policy(self, otp: messages.OtpRequest, entry: SendLog) -> messages.OtpRequest | Problem:
        what = "calls" if otp.delivery == "voice" else "SMS"
        allowed = self.settings.allowed_countries
        if allowed and otp.country not in allowed:
            entry.recipient, entry.country = self._shown(otp.recipient), otp.country
            return Problem(403, "Destination not allowed",
                           f"{what} to country {otp.country} is not allowed by policy")
        refused_type = self.numbers.refusal(otp.number_type, otp.country, otp.calling_code, otp.delivery)
        if refused_type is not None and not self._monitored("number_type", entry):
            entry.recipient, entry.country = self._shown(otp.recipient), otp.country
            return Problem(403, "Destination not allowed",
                           f"numbers of type {refused_type} get no {'call' if otp.delivery == 'voice' else 'SMS'} by policy")
        if otp.delivery == "voice":  # a call is not split into segments: it costs one unit
            return otp
        segments = entry.segments = sms_policy.segments(otp.text, self.settings.encoding)
        if segments > self.settings.max_segments and not self._monitored("segments", entry):
            return Problem(400, "Invalid request", f"'text' needs {segments} SMS segments, more than "
                           f"the {self.settings.max_segments} a message may use")
        return otp

    def _monitored(self, rule: str, entry: SendLog) -> bool:
        """Count a rule that would refuse; True when it only monitors (the send goes on)."""
        monitored = rule in self.settings.monitor_rules
        self.metrics.policy(rule, monitored)
        if monitored:
            entry.flag(rule)
        return monitored

    # --- the conversion rule -------------------------------------------------------------
    async def gate(self, otp: messages.OtpRequest, entry: SendLog) -> Problem | None:
        """The conversion rule's verdict on an SMS before the limits (calls and the canary are
        not tracked): a 403 when it enforces a block; a monitored block only flags the line."""
        if self.conversion is None or otp.delivery != "text" or otp.recipient == self.settings.canary_number:
            return None
        match await self.conversion.check(otp.recipient, otp.country):
            case outcomes.Allowed():
                return None
            case outcomes.Blocked(enforced=False):
                entry.flag("conversion")
                return None
            case outcomes.Blocked(until=until):
                entry.outcome, entry.detail = "forbidden", "conversion blocked"
                return Problem(403, "Conversion blocked", BLOCKED_DETAIL,
                               {"Retry-After": retry_after_header(max(1.0, until - time.time()))},
                               extra={"type": BLOCKED_TYPE})
            case gate:
                assert_never(gate)

    # --- claim -------------------------------------------------------------------------
    async def claim(self, otp: messages.OtpRequest, entry: SendLog) -> Verdict | Problem:
        segments = entry.segments or 1  # a call costs one unit of the budgets
        is_canary = otp.recipient == self.settings.canary_number
        try:  # the canary: none of the users' limits, its own cap instead
            return await self.state.claim(otp.idempotency_key, otp.recipient, entry.request_id, segments,
                                          (canary.cap_window(),) if is_canary else self._windows(otp, segments),
                                          user_limits=not is_canary, delivery=otp.delivery)
        except StateUnavailable:
            self.health.answered(False)
            entry.outcome = "state_unavailable"
            return _STATE_UNAVAILABLE

    def _windows(self, otp: messages.OtpRequest, segments: int) -> tuple[sms_policy.Window, ...]:
        """The policy's fixed-window counts a send is charged to (keys are digests)."""
        s, monitor = self.settings, self.settings.monitor_rules
        windows = [
            sms_policy.Window("prefix", recipient_tag(sms_policy.prefix_of(otp.recipient, s.prefix_digits)),
                              s.per_prefix.limit, s.per_prefix.window, 1, "prefix" in monitor),
            sms_policy.Window("country_hour", otp.country, s.country_hour.limit, s.country_hour.window,
                              segments, "country_hour" in monitor),
            sms_policy.Window("country_day", otp.country, s.country_day.limit, s.country_day.window,
                              segments, "country_day" in monitor),
        ]
        if s.per_client_ip is not None and otp.client_ip:
            windows.append(sms_policy.Window("client_ip", recipient_tag(sms_policy.ip_group(otp.client_ip)),
                                             s.per_client_ip.limit, s.per_client_ip.window, 1,
                                             "client_ip" in monitor))
        return tuple(windows)

    def known(self, verdict: Replay | InFlight | MaybeSent | Limited | Full, entry: SendLog,
              delivery: str = "text") -> Answer:
        """The answer for a key seen before, or a limit."""
        request_id = entry.request_id
        match verdict:
            case Replay(umid=umid):
                entry.idempotent, entry.umid, entry.outcome = "replayed", umid, "replayed"
                return _accepted(umid, {"Idempotent-Replayed": "true"}, delivery)
            case InFlight(retry_after=retry_after):
                entry.idempotent = "in_flight"
                return _problem(Problem(409, "Already in flight", "this message is being sent; retry later",
                                        {"Retry-After": retry_after_header(retry_after)}), request_id)
            case Full(retry_after=retry_after):
                entry.outcome = "store_full"
                return _problem(Problem(503, "Relay busy", "the idempotency store is full; retry later",
                                        {"Retry-After": retry_after_header(retry_after)}), request_id)
            case Limited(limit=limit, retry_after=retry_after):
                if limit in sms_policy.WINDOW_RULES:
                    self.metrics.policy(limit, monitored=False)
                elif limit == canary.CAP_RULE:
                    entry.outcome = "canary_capped"
                else:
                    self.metrics.limited(limit)
                return _problem(Problem(429, "Too many requests", _LIMIT_DETAILS[limit],
                                        {"Retry-After": retry_after_header(retry_after)}), request_id)
            case MaybeSent():
                entry.idempotent = "outcome_unknown"
                return _problem(Problem(504, "Outcome unknown", "an earlier attempt of this message may have "
                                        "been sent; it is never sent again"), request_id)
            case _:
                assert_never(verdict)

    # --- deliver -----------------------------------------------------------------------
    async def deliver(self, otp: messages.OtpRequest, api_key: str, entry: SendLog, started: float) -> Outcome:
        valid_until = time.time() + self.settings.code_validity  # when the code expires
        if otp.delivery == "voice":
            upstream, payload = self.voice_upstream, callflow(self.settings, otp, time.gmtime(valid_until))
            assert upstream is not None, "messages.parse refuses voice when it is off"
        else:
            upstream = self.upstream
            payload = {**self._base_payload, "destination": otp.recipient, "text": otp.text,
                       "clientMessageId": entry.request_id, "expiry": self._expiry_of(int(valid_until))}
            if otp.client_ip:
                payload["clientIp"] = otp.client_ip
            if callback := self.receipts.callback_url():
                payload["dlrCallbackUrl"] = callback
            if self.conversion is not None:  # 8x8 takes conversion feedback for SMS only
                payload["track"] = "Outcome"
        outcome, attempts = await upstream.send(api_key, payload, started + self.settings.deadline)
        entry.attempts = attempts
        if isinstance(outcome, Accepted):  # recorded first: its receipts may be on their way
            self.receipts.sent(outcome.umid, otp.country, otp.delivery)
            if (self.conversion is not None and otp.delivery == "text"
                    and otp.recipient != self.settings.canary_number):
                await self.conversion.sent(outcome.umid, otp.recipient, otp.country, otp.subject)
        if otp.recipient == self.settings.canary_number:
            await self._canary_attempt(*_canary_outcome(outcome))
        return outcome

    def _expiry_of(self, second: int) -> str:
        """8x8's ``expiry`` (whole seconds, UTC), formatted once per second."""
        if self._expiry[0] != second:
            self._expiry = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
        return self._expiry[1]

    def _shown(self, recipient: str) -> str:
        """The recipient as logs show it: masked, and the canary's number not even masked."""
        return "canary" if recipient == self.settings.canary_number else mask_number(recipient)

    async def _canary_attempt(self, outcome: str, umid: str = "", error_code: str = "") -> None:
        self.metrics.canary(outcome)
        if self.canary is not None:
            await self.canary.put(canary.record_of_send(outcome, time.time(), umid, error_code))

    # --- settle ------------------------------------------------------------------------
    async def settle(self, key: str, outcome: Outcome, entry: SendLog) -> None:
        """Record what came of a claimed key. A key whose message surely did not go out is
        released (it may be sent again); an 8x8 5xx may have been taken, so it counts as
        unknown. If the store cannot be told, the claim turns "unknown" by itself once its
        in-flight time passes, which never allows a second SMS."""
        match outcome:
            case Accepted(umid=umid):
                settled = ACCEPTED
            case NotSent():
                settled, umid = RELEASE, ""
            case Rejected(http_status=status):
                settled, umid = (RELEASE if status < 500 else UNKNOWN), ""
            case Unknown():
                settled, umid = UNKNOWN, ""
            case _:
                assert_never(outcome)
        try:
            await self.state.settle(key, settled, umid)
        except StateUnavailable:
            self.health.answered(False)
            entry.state = "not settled"

    def answer(self, outcome: Outcome, otp: messages.OtpRequest, entry: SendLog) -> Answer:
        """What the client is told of 8x8's outcome."""
        match outcome:
            case Accepted(umid=umid):
                entry.umid = umid
                return _accepted(umid, delivery=otp.delivery)
            case Rejected(http_status=status, code=code):
                entry.upstream = f"{status}/{code}"
                what = "call" if otp.delivery == "voice" else "message"
                title = f"8x8 rejected the {what}" if status < 500 else "8x8 failed"
                return _problem(Problem(502, title, f"8x8 answered {status} with code {code}",
                                        extra={"upstream_status": status, "upstream_code": code}),
                                entry.request_id)
            case Unknown(reason=reason):
                entry.detail = reason
                return _problem(Problem(504, "Outcome unknown", reason), entry.request_id)
            case NotSent(reason=reason, retry_after=retry_after):
                entry.detail = reason
                headers = {"Retry-After": retry_after_header(retry_after or 1)}
                return _problem(Problem(503, "8x8 unavailable", reason, headers), entry.request_id)
            case _:
                assert_never(outcome)


def callflow(settings: Settings, otp: messages.OtpRequest, valid_until: time.struct_time) -> dict[str, object]:
    """8x8's Voice Messaging request: call the recipient from the caller ID, read Auth0's
    spoken text in the locale's voice, hang up. ``clientActionId`` is the idempotency key
    (8x8's records of a call tie back to the message); ``validUntil`` is the text path's
    ``expiry`` (in the voice API's documented YYYY-MM-DDTHH:MM:SS.SSSZ): a call 8x8 could
    not start while the code is valid is never placed."""
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", valid_until)
    return {"clientActionId": otp.idempotency_key, "validUntil": until, "callflow": [
        {"action": "makeCall", "params": {"source": settings.voice_caller_id, "destination": otp.recipient}},
        {"action": "say", "params": {"text": otp.text, "voiceProfile": settings.voice_profile_for(otp.locale),
                                     "repetition": settings.voice_repetition}},
        {"action": "hangup"},
    ]}


def _accepted(umid: str, headers: dict[str, str] | None = None, delivery: str = "text") -> Answer:
    """202; a call's answer also says ``"channel": "voice"`` (its id is 8x8's sessionId)."""
    body = {"id": umid, "status": "queued", "channel": "voice"} if delivery == "voice" else {
        "id": umid, "status": "queued"}
    return Answer(202, orjson.dumps(body), {"Content-Type": "application/json", **(headers or {})})


def _problem(problem: Problem, request_id: str) -> Answer:
    return Answer(problem.status, problem.body(request_id), {"Content-Type": PROBLEM_JSON, **problem.headers})


def _canary_outcome(outcome: Outcome) -> tuple[str, str, str]:
    """(canary.OUTCOMES value, umid, 8x8's error code) of a canary send's outcome."""
    match outcome:
        case Accepted(umid=umid):
            return "accepted", umid, ""
        case Rejected(http_status=status, code=code):
            return ("rejected" if status < 500 else "failed"), "", code
        case Unknown():
            return "unknown", "", ""
        case NotSent():
            return "failed", "", ""
        case _:
            assert_never(outcome)


_LIMIT_DETAILS = {
    "global": "global rate limit reached", "recipient": "limit for this recipient reached",
    VOICE_RECIPIENT: "call limit for this recipient reached",
    "prefix": "limit for numbers with this prefix reached",
    "country_hour": "hourly budget for this country reached",
    "country_day": "daily budget for this country reached",
    "client_ip": "limit for this client IP reached",
    canary.CAP_RULE: "the canary number's own cap reached",
}
_NOT_READY = Problem(503, "Relay not ready", "credentials are not loaded", {"Retry-After": "5"})
_STATE_UNAVAILABLE = Problem(503, "Relay not ready", "the shared state store does not answer",
                             {"Retry-After": "2"})
_BUSY = Problem(503, "Relay busy", "too many requests in flight", {"Retry-After": "1"})
_TOO_LARGE = Problem(413, "Payload too large", f"the body must be at most {MAX_BODY} bytes")
_CLIENT_GONE = Problem(499, "Client closed request", "the connection closed before the body arrived")
_BODY_TIMEOUT = Problem(408, "Request timeout", "the body did not arrive in time")
_UNAUTHORIZED = Problem(401, "Unauthorized", "missing, invalid or expired signature")
_UNSUPPORTED = Problem(415, "Unsupported media type", "send Content-Type: application/json")
_COMPRESSED = Problem(415, "Unsupported media type", "compressed bodies are not accepted")
