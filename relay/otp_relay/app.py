"""The relay's HTTP applications (aiohttp server): the public one serves only the routes of
``Relay.public_routes`` (``POST /v1/messages``); the admin one ``/healthz``, ``/readyz`` and
``/metrics``.

Why aiohttp's server (measured beside granian and uvicorn in bench/relay, see relay/README.md):
its connections are asyncio protocols, so ``connections.ConnectionGuard`` can bound them
(header deadline, eviction, shutdown); it gives raw body access for the signature and runs a
request through few layers on uvloop. The 8x8 client is pyreqwest (``upstream``). The
decisions live in library-independent modules (``signing``, ``messages``, ``state``,
``connections``, ``upstream``'s policy) so the HTTP stack can change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import web

from . import canary, conversion, messages, outcomes, policy as sms_policy, receipts, signing, webhook
from .config import IN_FLIGHT_MARGIN, Settings
from .connections import MAX_BODY, ConnectionGuard
from .keys import WatchedFile, parse_api_key, parse_signing_keys
from .limits import retry_after_header
from .logs import LineBudget, RequestLog, mask_number
from .metrics import RelayMetrics
from .problems import CONTENT_TYPE as PROBLEM_JSON, Problem
from .state import (
    ACCEPTED,
    RELEASE,
    UNKNOWN,
    VOICE_RECIPIENT,
    Full,
    InFlight,
    Limited,
    MemoryState,
    Proceed,
    Replay,
    State,
    StateUnavailable,
    Timing,
    recipient_tag,
)
from .tls import ServingCertificate
from .upstream import Accepted, EightByEight, NotSent, Rejected, RetryPolicy, Unknown, interpret_voice

ADMIN_CONNECTIONS = 64  # open admin connections at most (probes, scrapes, the operator)
log = logging.getLogger("otp_relay.request")
request_log = RequestLog()

_OUTCOME_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 408: "timeout", 409: "in_flight",
    413: "too_large", 415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
    502: "upstream_rejected", 503: "upstream_unavailable", 504: "outcome_unknown",
}
Answer = tuple[int, bytes, dict[str, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_state(settings: Settings) -> State:
    timing = Timing(settings.idempotency_retention, settings.deadline + IN_FLIGHT_MARGIN)
    if not settings.state_url:
        return MemoryState(settings.per_recipient, settings.global_limit, timing,
                           max_keys=settings.max_idempotency_keys,
                           voice_per_recipient=settings.voice_per_recipient)
    from .redis_state import RedisState  # noqa: PLC0415  only with a store configured

    return RedisState(settings.state_url, settings.state_password_file, settings.state_prefix,
                      settings.per_recipient, settings.global_limit, timing,
                      ca_file=settings.state_ca_file, voice_per_recipient=settings.voice_per_recipient)


class Relay:
    """State shared by all requests of one process."""

    def __init__(self, settings: Settings, policy: RetryPolicy | None = None, worker: int = 0) -> None:
        self.settings = settings
        self._line_start: dict[str, object] = {"worker": worker} if settings.workers > 1 else {}
        self.metrics = RelayMetrics()
        self.api_key = WatchedFile("api_key", settings.api_key_file, parse_api_key,
                                   self.metrics.key_reload)
        self.signing_keys = WatchedFile("signing_key", settings.signing_key_file,
                                        parse_signing_keys, self.metrics.key_reload)
        self.certificate = (ServingCertificate(settings.tls_cert_file, settings.tls_key_file)
                            if settings.tls_cert_file and settings.tls_key_file else None)
        self._primed: tuple = ()
        self._primed_from: list[str] | None = None
        self.state = build_state(settings)
        self.receipts = receipts.Receipts(settings, receipts.store_for(self.state, settings.state_prefix),
                                          self.metrics.registry, self.metrics.key_reload)
        self.canary = canary.store_for(self.state, settings.state_prefix) if settings.canary_number else None
        self.receipts.canary = self.canary
        self.state_ok = self.state.scope == "process"
        self.guard = ConnectionGuard(settings.max_connections, settings.header_timeout,
                                     settings.idle_timeout, self.metrics.dropped,
                                     max_readers=settings.max_body_readers,
                                     min_body_rate=settings.body_min_rate)
        self.admin_guard = ConnectionGuard(ADMIN_CONNECTIONS, settings.header_timeout,
                                           settings.idle_timeout, self.metrics.admin_dropped,
                                           max_readers=ADMIN_CONNECTIONS)
        self.metrics.connections.set_function(lambda: len(self.guard))
        self.metrics.readers.set_function(lambda: self.guard.readers)
        self.in_flight = 0
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self._base_payload: dict[str, object] = {"encoding": settings.encoding}
        if settings.sender:
            self._base_payload["source"] = settings.sender
        self.rejections_log = LineBudget()
        self.numbers = sms_policy.NumberPolicy(settings.allowed_number_types, settings.allowed_non_geographic)
        retry_policy = policy or RetryPolicy(deadline=settings.deadline)
        self.upstream = EightByEight(settings.base_url, settings.subaccount, retry_policy,
                                     self.metrics.upstream_observer("text"))
        # calls: the same client and retry policy on 8x8's Voice Messaging API (None: voice off)
        self.voice_upstream = (EightByEight(settings.voice_base_url, settings.subaccount, retry_policy,
                                            self.metrics.upstream_observer("voice"), pool_size=20,
                                            path="callflows", interpret=interpret_voice)
                               if settings.voice_enabled else None)
        # conversion tracking (issue 26): records sends, the Auth0 log stream sink, 8x8 feedback
        self.conversion = conversion.build(settings, self.state, self.metrics.registry, self.metrics.key_reload)
        self.conversion.poster = conversion.Poster(self.upstream.call, lambda: self.api_key.value)
        self.conversion.signing_keys = lambda: self.signing_keys.value or []
        # the subaccount's VSS webhook kept on this relay's receipt path (off without voice or
        # receipts); with --workers, worker 0 only (it serves the admin listener that reports it)
        tokens = self.receipts.tokens
        self.voice_webhook = webhook.VoiceWebhook(
            self.voice_upstream if tokens is not None and worker == 0 else None, settings.receipt_url,
            (lambda: tokens.newest) if tokens is not None else (lambda: None),
            lambda: self.api_key.value, self.metrics.voice_webhook)

    # --- keys, certificate, state store ----------------------------------------------
    async def refresh(self) -> None:
        self.api_key.refresh()
        self.signing_keys.refresh()
        self.receipts.refresh()
        self.conversion.refresh()
        self.voice_webhook.changed()
        if self.certificate is not None:
            self.certificate.refresh()
        if self.state.scope == "shared":
            self._state_answered(await self.state.check())
        self.metrics.ready.set(1 if self.ready else 0)

    def _state_answered(self, ok: bool) -> None:
        if ok != self.state_ok:
            log.warning("state store " + ("reachable again" if ok else "unreachable: refusing sends"))
        self.state_ok = ok
        self.metrics.state_up.set(1 if ok else 0)
        if not ok:
            self.metrics.state_errors.inc()

    @property
    def ready(self) -> bool:
        return bool(self.api_key.value and self.signing_keys.value and self.state_ok)

    def _keys(self) -> tuple:
        current = self.signing_keys.value
        if current is not self._primed_from:
            self._primed = signing.prime(current or [])
            self._primed_from = current
        return self._primed

    async def _watch(self) -> None:
        interval = self.settings.key_reload_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # never let the watcher die: keep the last good keys
                log.exception("refresh failed")

    # --- the send endpoint -----------------------------------------------------------
    async def send(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        request_id = os.urandom(16).hex()
        fields: dict[str, object] = {"request_id": request_id, **self._line_start}
        transport = request.transport
        self.guard.request_started(transport)
        try:
            status, body, headers = await self._send(request, request_id, fields, started)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            fields["outcome"] = "internal_error"
            status, body, headers = _problem(
                Problem(500, "Internal error", "the relay failed to process the request"), request_id)
        finally:
            self.guard.request_finished(transport)
        close = fields.pop("close", False)
        outcome = str(fields.pop("outcome", None) or (
            "accepted" if status == 202 else _OUTCOME_BY_STATUS.get(status, "bad_request")))
        self.metrics.outcome(outcome, fields.get("channel"))
        fields.update(outcome=outcome, status=status,
                      duration_ms=round((time.monotonic() - started) * 1000, 2))
        self._log(fields)
        headers["X-Request-Id"] = request_id
        response = web.Response(status=status, body=body, headers=headers)
        if close:
            response.force_close()
        return response

    def _log(self, fields: dict[str, object]) -> None:
        """Every authenticated request is logged; others (anyone on the internet can send
        them) within a budget of lines per second."""
        if not fields.pop("authenticated", False):
            left_out = self.rejections_log.take()
            if left_out is None:
                self.metrics.log_suppressed.inc()
                return
            if left_out:
                fields["suppressed"] = left_out
        request_log.info("send", fields)

    async def _send(self, request: web.Request, request_id: str, fields: dict[str, object],
                    started: float) -> Answer:
        otp = await self._admit(request, fields)
        if isinstance(otp, Problem):
            fields.setdefault("detail", otp.detail)
            return _problem(otp, request_id)
        self.in_flight += 1  # only signed requests past every check count (no await since the cap)
        try:
            return await self._deliver(otp, request_id, fields, started)
        finally:
            self.in_flight -= 1

    async def _deliver(self, otp: messages.OtpRequest, request_id: str, fields: dict[str, object],
                       started: float) -> Answer:
        fields["recipient"] = self._shown(otp.recipient)
        fields["country"] = otp.country
        api_key = self.api_key.value
        if api_key is None:
            fields["outcome"] = "not_ready"
            return _problem(_NOT_READY, request_id)
        segments = fields.get("segments", 1)  # a call costs one unit of the budgets
        assert isinstance(segments, int)
        is_canary = otp.recipient == self.settings.canary_number
        if otp.delivery == "text" and not is_canary and (refused := await self._conversion_gate(otp, fields)):
            return _problem(refused, request_id)
        try:  # the canary: none of the users' limits, its own cap instead
            verdict = await self.state.claim(otp.idempotency_key, otp.recipient, request_id, segments,
                                             (canary.cap_window(),) if is_canary else self._windows(otp, segments),
                                             user_limits=not is_canary, delivery=otp.delivery)
        except StateUnavailable:
            self._state_answered(False)
            fields["outcome"] = "state_unavailable"
            return _problem(_STATE_UNAVAILABLE, request_id)
        if not isinstance(verdict, Proceed):
            if is_canary and isinstance(verdict, Limited):
                await self._canary_attempt("capped")
            return self._answer_known(verdict, fields, request_id, otp.delivery)
        for rule in verdict.would_refuse:
            self._monitored(rule, fields)

        valid_until = time.gmtime(time.time() + self.settings.code_validity)  # when the code expires
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", valid_until)
        if otp.delivery == "voice":
            upstream, payload = self.voice_upstream, self._callflow(otp, valid_until)
            assert upstream is not None, "messages.parse refuses voice when it is off"
        else:
            upstream = self.upstream
            payload = {**self._base_payload, "destination": otp.recipient, "text": otp.text,
                       "clientMessageId": request_id, "expiry": expiry}
            if otp.client_ip:
                payload["clientIp"] = otp.client_ip
            if callback := self.receipts.callback_url():
                payload["dlrCallbackUrl"] = callback
            if self.conversion.enabled:  # 8x8 takes conversion feedback for SMS only
                payload["track"] = "Outcome"
        outcome, attempts = await upstream.send(api_key, payload, started + self.settings.deadline)
        fields["attempts"] = attempts
        if isinstance(outcome, Accepted):  # recorded first: its receipts may be on their way
            self.receipts.sent(outcome.umid, otp.country, otp.delivery)
            if otp.delivery == "text" and not is_canary:
                await self.conversion.sent(outcome.umid, otp.recipient, otp.country, otp.subject)
        if is_canary:
            await self._canary_attempt(*_canary_outcome(outcome))
        await self._settle(otp.idempotency_key, outcome, fields)
        if isinstance(outcome, Accepted):
            fields["umid"] = outcome.umid
            return _accepted(outcome.umid, delivery=otp.delivery)
        if isinstance(outcome, Rejected):
            fields["upstream"] = f"{outcome.http_status}/{outcome.code}"
            what = "call" if otp.delivery == "voice" else "message"
            title = f"8x8 rejected the {what}" if outcome.http_status < 500 else "8x8 failed"
            return _problem(Problem(502, title, f"8x8 answered {outcome.http_status} with code {outcome.code}",
                                    extra={"upstream_status": outcome.http_status,
                                           "upstream_code": outcome.code}), request_id)
        fields["detail"] = outcome.reason
        if isinstance(outcome, Unknown):
            return _problem(Problem(504, "Outcome unknown", outcome.reason), request_id)
        headers = {"Retry-After": retry_after_header(outcome.retry_after or 1)}
        return _problem(Problem(503, "8x8 unavailable", outcome.reason, headers), request_id)

    async def _conversion_gate(self, otp: messages.OtpRequest, fields: dict[str, object]) -> Problem | None:
        """The conversion rule's verdict before the limits: a 403 when it enforces a block."""
        gate = await self.conversion.check(otp.recipient, otp.country)
        if not isinstance(gate, outcomes.Blocked):
            return None
        if not gate.enforced:
            fields["would_refuse"] = ",".join(filter(None, (str(fields.get("would_refuse", "")), "conversion")))
            return None
        fields["outcome"] = "forbidden"
        fields["detail"] = "conversion blocked"
        return Problem(403, "Conversion blocked", conversion.BLOCKED_DETAIL,
                       {"Retry-After": retry_after_header(max(1.0, gate.until - time.time()))},
                       extra={"type": conversion.BLOCKED_TYPE})

    def _callflow(self, otp: messages.OtpRequest, valid_until: time.struct_time) -> dict[str, object]:
        """8x8's Voice Messaging request: call the recipient from the caller ID, read Auth0's
        spoken text in the locale's voice, hang up. ``clientActionId`` is the idempotency key
        (8x8's records of a call tie back to the message); ``validUntil`` is the text path's
        ``expiry`` (in the voice API's documented YYYY-MM-DDTHH:MM:SS.SSSZ): a call 8x8 could
        not start while the code is valid is never placed."""
        s = self.settings
        until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", valid_until)
        return {"clientActionId": otp.idempotency_key, "validUntil": until, "callflow": [
            {"action": "makeCall", "params": {"source": s.voice_caller_id, "destination": otp.recipient}},
            {"action": "say", "params": {"text": otp.text, "voiceProfile": s.voice_profile_for(otp.locale),
                                         "repetition": s.voice_repetition}},
            {"action": "hangup"},
        ]}

    def _shown(self, recipient: str) -> str:
        """The recipient as logs show it: masked, and the canary's number not even masked."""
        return "canary" if recipient == self.settings.canary_number else mask_number(recipient)

    async def _canary_attempt(self, outcome: str, umid: str = "", error_code: str = "") -> None:
        self.metrics.canary(outcome)
        if self.canary is not None:
            await self.canary.put(canary.record_of_send(outcome, time.time(), umid, error_code))

    async def _settle(self, key: str, outcome: object, fields: dict[str, object]) -> None:
        """Record what came of a claimed key. A key whose message surely did not go out is
        released (it may be sent again); an 8x8 5xx may have been taken, so it counts as
        unknown. If the store cannot be told, the claim turns "unknown" by itself once its
        in-flight time passes, which never allows a second SMS."""
        if isinstance(outcome, Accepted):
            settled, umid = ACCEPTED, outcome.umid
        elif isinstance(outcome, NotSent) or (isinstance(outcome, Rejected) and outcome.http_status < 500):
            settled, umid = RELEASE, ""
        else:
            settled, umid = UNKNOWN, ""
        try:
            await self.state.settle(key, settled, umid)
        except StateUnavailable:
            self._state_answered(False)
            fields["state"] = "not settled"

    def _answer_known(self, verdict: object, fields: dict[str, object], request_id: str,
                      delivery: str = "text") -> Answer:
        """The answer for a key seen before, or a limit."""
        if isinstance(verdict, Replay):
            fields["idempotent"], fields["umid"], fields["outcome"] = "replayed", verdict.umid, "replayed"
            return _accepted(verdict.umid, {"Idempotent-Replayed": "true"}, delivery)
        if isinstance(verdict, InFlight):
            fields["idempotent"] = "in_flight"
            return _problem(Problem(409, "Already in flight", "this message is being sent; retry later",
                                    {"Retry-After": retry_after_header(verdict.retry_after)}), request_id)
        if isinstance(verdict, Full):
            fields["outcome"] = "store_full"
            return _problem(Problem(503, "Relay busy", "the idempotency store is full; retry later",
                                    {"Retry-After": retry_after_header(verdict.retry_after)}), request_id)
        if isinstance(verdict, Limited):
            if verdict.limit in sms_policy.WINDOW_RULES:
                self.metrics.policy(verdict.limit, monitored=False)
            elif verdict.limit == canary.CAP_RULE:
                fields["outcome"] = "canary_capped"
            else:
                self.metrics.limited(verdict.limit)
            detail = _LIMIT_DETAILS[verdict.limit]
            return _problem(Problem(429, "Too many requests", detail,
                                    {"Retry-After": retry_after_header(verdict.retry_after)}), request_id)
        fields["idempotent"] = "outcome_unknown"
        return _problem(Problem(504, "Outcome unknown", "an earlier attempt of this message may have been "
                                "sent; it is never sent again"), request_id)

    async def _admit(self, request: web.Request, fields: dict[str, object]) -> messages.OtpRequest | Problem:
        """Every check before the message may go to 8x8, cheapest and most basic first; nothing
        before the signature check holds more than a connection and a body reader."""
        if not self.ready:
            fields["outcome"] = "state_unavailable" if not self.state_ok else "not_ready"
            return _STATE_UNAVAILABLE if not self.state_ok else _NOT_READY
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            return _COMPRESSED
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _TOO_LARGE
        try:
            if request.content.is_eof():  # the body came with the headers: no timer to arm
                raw = await request.read()
            else:
                async with asyncio.timeout(self.settings.body_timeout):
                    raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _TOO_LARGE
        except TimeoutError:
            fields["close"] = True  # the rest of the body is not worth waiting for
            return _BODY_TIMEOUT
        except OSError:  # the client hung up (or the guard dropped it) mid-body: nobody to answer
            fields["outcome"], fields["close"] = "client_abort", True
            return _CLIENT_GONE
        self.guard.body_received(request.transport)
        timestamp, now = request.headers.get("X-Otp-Timestamp"), time.time()
        digest = signing.verify(self._keys(), timestamp, request.headers.get("X-Otp-Signature"), raw, now)
        if isinstance(digest, signing.Failure):
            fields["detail"] = digest.value
            return _UNAUTHORIZED
        fields["authenticated"] = True
        if self.in_flight >= self.settings.max_in_flight:
            fields["outcome"] = "overloaded"
            return _BUSY
        if request.content_type != "application/json":
            return _UNSUPPORTED
        otp = messages.parse(raw, voice=self.settings.voice_enabled)
        if isinstance(otp, Problem):
            return otp
        fields["channel"] = otp.delivery
        what = "calls" if otp.delivery == "voice" else "SMS"
        allowed = self.settings.allowed_countries
        if allowed and otp.country not in allowed:
            fields["recipient"], fields["country"] = self._shown(otp.recipient), otp.country
            return Problem(403, "Destination not allowed",
                           f"{what} to country {otp.country} is not allowed by policy")
        refused_type = self.numbers.refusal(otp.number_type, otp.country, otp.calling_code, otp.delivery)
        if refused_type is not None and not self._monitored("number_type", fields):
            fields["recipient"], fields["country"] = self._shown(otp.recipient), otp.country
            return Problem(403, "Destination not allowed",
                           f"numbers of type {refused_type} get no {'call' if otp.delivery == 'voice' else 'SMS'} by policy")
        if otp.delivery == "voice":  # a call is not split into segments: it costs one unit
            return otp
        segments = fields["segments"] = sms_policy.segments(otp.text, self.settings.encoding)
        if segments > self.settings.max_segments and not self._monitored("segments", fields):
            return Problem(400, "Invalid request", f"'text' needs {segments} SMS segments, more than "
                           f"the {self.settings.max_segments} a message may use")
        return otp

    def _monitored(self, rule: str, fields: dict[str, object]) -> bool:
        """Count a rule that would refuse; True when it only monitors (the send goes on)."""
        monitored = rule in self.settings.monitor_rules
        self.metrics.policy(rule, monitored)
        if monitored:
            fields["would_refuse"] = ",".join(filter(None, (str(fields.get("would_refuse", "")), rule)))
        return monitored

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

    # --- admin endpoints ---------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready", "state": self.state.scope})
        files = (self.api_key, self.signing_keys)
        answer: dict[str, object] = {
            "status": "not ready",
            "missing": [f.name for f in files if not f.value],
            "reasons": {f.name: f.problem for f in files if f.problem},
        }
        if not self.state_ok:
            answer["state"] = "unreachable"
        return web.json_response(answer, status=503)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.metrics.state_up.set(1 if self.state_ok else 0)
        await self.refresh()
        clients = [c for c in (self.upstream, self.voice_upstream) if c is not None]
        for client in clients:
            await client.start()
        watcher = asyncio.create_task(self._watch())
        registrar = asyncio.create_task(self.voice_webhook.run())  # never awaited by sends or probes
        scanner = asyncio.create_task(self.conversion.run()) if self.conversion.enabled else None
        yield
        watcher.cancel()
        registrar.cancel()
        if scanner is not None:
            scanner.cancel()
        await self.conversion.close()
        for client in clients:
            await client.close()
        await self.state.close()

    def public_routes(self) -> dict[str, Handler]:
        """Every public ``POST`` path (each also served under ``--path-prefix``): the one
        place a public route is added."""
        routes: dict[str, Handler] = {"/v1/messages": self.send, f"{receipts.RECEIPT_PATH}/{{token}}": self.receipt}
        if self.settings.conversion:
            routes[conversion.SINK_PATH] = self.auth0_logs
            routes[conversion.LIFT_PATH] = self.conversion_lift
        return routes

    async def auth0_logs(self, request: web.Request) -> web.Response:
        return await conversion.handle_sink(self, request)

    async def conversion_lift(self, request: web.Request) -> web.Response:
        return await conversion.handle_lift(self, request)

    async def receipt(self, request: web.Request) -> web.Response:
        return await receipts.handle(self, request)

    def make_app(self) -> web.Application:
        """The public application: only the routes above (and their prefixed twins)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.cleanup_ctx.append(self._lifecycle)
        for prefix in sorted({"", self.settings.path_prefix}):
            for path, handler in self.public_routes().items():
                app.router.add_post(prefix + path, handler)
        return app

    def make_admin_app(self) -> web.Application:
        guard = self.admin_guard

        @web.middleware
        async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
            """Admin requests carry no body: answered, the connection is idle again."""
            guard.request_started(request.transport)
            guard.body_received(request.transport)
            try:
                return await handler(request)
            finally:
                guard.request_finished(request.transport)

        app = web.Application(client_max_size=1024, middlewares=[guarded])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        receipts.add_admin_route(self, app)
        return app


def _accepted(umid: str, headers: dict[str, str] | None = None, delivery: str = "text") -> Answer:
    """202; a call's answer also says ``"channel": "voice"`` (its id is 8x8's sessionId)."""
    body = {"id": umid, "status": "queued", "channel": "voice"} if delivery == "voice" else {
        "id": umid, "status": "queued"}
    return 202, orjson.dumps(body), {
        "Content-Type": "application/json", **(headers or {})}


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


def _canary_outcome(outcome: object) -> tuple[str, str, str]:
    """(canary.OUTCOMES value, umid, 8x8's error code) of a canary send's outcome."""
    if isinstance(outcome, Accepted):
        return "accepted", outcome.umid, ""
    if isinstance(outcome, Rejected):
        return ("rejected" if outcome.http_status < 500 else "failed"), "", outcome.code
    return ("unknown" if isinstance(outcome, Unknown) else "failed"), "", ""


def _problem(problem: Problem, request_id: str) -> Answer:
    return problem.status, problem.body(request_id), {"Content-Type": PROBLEM_JSON, **problem.headers}
