"""The relay's HTTP application (aiohttp server).

Why aiohttp for the server too: the hot-path client must be aiohttp's (httpx's AsyncClient is
an order of magnitude slower here, encode/httpx#3215), and aiohttp's server on uvloop runs a
request through far fewer layers than ASGI + a framework; one library, one event loop, raw body
access for the signature, and a graceful shutdown that stops listening, then waits for
in-flight handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator

from aiohttp import web

from . import messages, signing
from .config import Settings
from .keys import WatchedFile, parse_api_key, parse_signing_keys
from .limits import RecipientWindow, TokenBucket, retry_after_header
from .logs import RequestLog, mask_number
from .metrics import RelayMetrics
from .problems import CONTENT_TYPE as PROBLEM_JSON, Problem
from .upstream import Accepted, EightByEight, Rejected, RetryPolicy, Unavailable

MAX_BODY = 16 * 1024
log = logging.getLogger("otp_relay.request")
request_log = RequestLog()

_OUTCOME_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 413: "too_large",
    415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
    502: "upstream_rejected", 503: "upstream_unavailable",
}
_UNAUTHORIZED_DETAIL = "missing, invalid, expired or replayed signature"


class Relay:
    """State shared by all requests of one process."""

    def __init__(self, settings: Settings, policy: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.metrics = RelayMetrics()
        self.api_key = WatchedFile("api_key", settings.api_key_file, parse_api_key,
                                   self.metrics.key_reload)
        self.signing_keys = WatchedFile("signing_key", settings.signing_key_file,
                                        parse_signing_keys, self.metrics.key_reload)
        self._primed: tuple = ()
        self._primed_from: list[str] | None = None
        self.replays = signing.ReplayCache()
        self.recipients = RecipientWindow(settings.per_recipient)
        self.bucket = TokenBucket(settings.global_limit, time.monotonic())
        self.upstream = EightByEight(settings.base_url, settings.subaccount,
                                     policy or RetryPolicy(), self.metrics.upstream)

    # --- keys ------------------------------------------------------------------------
    def refresh_keys(self) -> None:
        self.api_key.refresh()
        self.signing_keys.refresh()
        self.metrics.ready.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        return self.api_key.value is not None and self.signing_keys.value is not None

    def _keys(self) -> tuple:
        current = self.signing_keys.value
        if current is not self._primed_from:
            self._primed = signing.prime(current or [])
            self._primed_from = current
        return self._primed

    async def _watch_keys(self) -> None:
        interval = self.settings.key_reload_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.refresh_keys()
            except Exception:  # never let the watcher die: keep the last good keys
                log.exception("key refresh failed")

    # --- the send endpoint -----------------------------------------------------------
    async def send(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        request_id = os.urandom(16).hex()
        fields: dict[str, object] = {"request_id": request_id}
        try:
            status, body, headers = await self._send(request, request_id, fields)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            self.metrics.outcome("internal_error")
            problem = Problem(500, "Internal error", "the relay failed to process the request")
            return _problem_response(problem, request_id)
        outcome = "accepted" if status == 202 else fields.pop("outcome", None) or _OUTCOME_BY_STATUS.get(status, "bad_request")
        self.metrics.outcome(outcome)
        fields.update(outcome=outcome, status=status,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))
        request_log.info("send", fields)
        headers["X-Request-Id"] = request_id
        return web.Response(status=status, body=body, headers=headers)

    async def _send(self, request: web.Request, request_id: str,
                    fields: dict[str, object]) -> tuple[int, bytes, dict[str, str]]:
        problem = await self._admit(request, fields)
        if isinstance(problem, Problem):
            fields.setdefault("detail", problem.detail)
            return _problem(problem, request_id)
        otp = problem
        fields["recipient"] = mask_number(otp.recipient)
        fields["country"] = otp.country
        api_key = self.api_key.value
        if api_key is None:
            fields["outcome"] = "not_ready"
            return _problem(_NOT_READY, request_id)

        payload: dict[str, object] = {
            "destination": otp.recipient, "text": otp.text,
            "encoding": self.settings.encoding, "clientMessageId": request_id,
        }
        if self.settings.sender:
            payload["source"] = self.settings.sender
        if otp.client_ip:
            payload["clientIp"] = otp.client_ip
        outcome, attempts = await self.upstream.send(api_key, payload)
        fields["attempts"] = attempts
        if isinstance(outcome, Accepted):
            fields["umid"] = outcome.umid
            return 202, json.dumps({"id": outcome.umid, "status": "queued"}).encode(), {
                "Content-Type": "application/json"}
        if isinstance(outcome, Rejected):
            fields["upstream"] = f"{outcome.http_status}/{outcome.code}"
            title = "8x8 rejected the message" if outcome.http_status < 500 else "8x8 failed"
            return _problem(Problem(502, title, f"8x8 answered {outcome.http_status} with code {outcome.code}",
                                    extra={"upstream_status": outcome.http_status,
                                           "upstream_code": outcome.code}), request_id)
        assert isinstance(outcome, Unavailable)
        fields["detail"] = outcome.reason
        headers = {"Retry-After": retry_after_header(outcome.retry_after)} if outcome.retry_after else {}
        return _problem(Problem(503, "8x8 unavailable", outcome.reason, headers), request_id)

    async def _admit(self, request: web.Request, fields: dict[str, object]) -> messages.OtpRequest | Problem:
        """Every check before the message may go to 8x8, cheapest and most basic first."""
        if not self.ready:
            fields["outcome"] = "not_ready"
            return _NOT_READY
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _TOO_LARGE
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _TOO_LARGE
        timestamp, now = request.headers.get("X-Otp-Timestamp"), time.time()
        digest = signing.verify(self._keys(), timestamp, request.headers.get("X-Otp-Signature"), raw, now)
        if isinstance(digest, signing.Failure):
            fields["detail"] = digest.value
            return _UNAUTHORIZED
        fresh = self.replays.remember(digest, int(timestamp), now)  # verified: digits
        if fresh is False:
            fields["detail"] = signing.Failure.REPLAYED.value
            return _UNAUTHORIZED
        if fresh is None:
            self.metrics.global_limited.inc()
            return Problem(429, "Too many requests", "replay cache full", {"Retry-After": "1"})
        if request.content_type != "application/json":
            return _UNSUPPORTED
        otp = messages.parse(raw)
        if isinstance(otp, Problem):
            return otp
        settings = self.settings
        if settings.allowed_countries and otp.country not in settings.allowed_countries:
            fields["recipient"], fields["country"] = mask_number(otp.recipient), otp.country
            return Problem(403, "Destination not allowed",
                           f"SMS to country {otp.country} is not allowed by policy")
        now = time.monotonic()
        wait = self.bucket.retry_after(now)
        if wait is not None:
            self.metrics.global_limited.inc()
            return Problem(429, "Too many requests", "global rate limit reached",
                           {"Retry-After": retry_after_header(wait)})
        wait = self.recipients.retry_after(otp.recipient, now)
        if wait is not None:
            self.metrics.recipient_limited.inc()
            fields["recipient"] = mask_number(otp.recipient)
            return Problem(429, "Too many requests", "limit for this recipient reached",
                           {"Retry-After": retry_after_header(wait)})
        self.bucket.take()
        self.recipients.record(otp.recipient, now)
        return otp

    # --- probes ----------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready"})
        missing = [f.name for f in (self.api_key, self.signing_keys) if f.value is None]
        return web.json_response({"status": "not ready", "missing": missing}, status=503)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.refresh_keys()
        await self.upstream.start()
        watcher = asyncio.create_task(self._watch_keys())
        yield
        watcher.cancel()
        await self.upstream.close()

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.cleanup_ctx.append(self._lifecycle)
        prefixes = {"", self.settings.path_prefix}
        for prefix in sorted(prefixes):
            app.router.add_post(f"{prefix}/v1/messages", self.send)
            app.router.add_get(f"{prefix}/healthz", self.healthz)
            app.router.add_get(f"{prefix}/readyz", self.readyz)
            app.router.add_get(f"{prefix}/metrics", self.metrics_endpoint)
        return app


_NOT_READY = Problem(503, "Relay not ready", "credentials are not loaded yet", {"Retry-After": "5"})
_TOO_LARGE = Problem(413, "Payload too large", f"the body must be at most {MAX_BODY} bytes")
_UNAUTHORIZED = Problem(401, "Unauthorized", _UNAUTHORIZED_DETAIL)
_UNSUPPORTED = Problem(415, "Unsupported media type", "send Content-Type: application/json")


def _problem(problem: Problem, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    return problem.status, problem.body(request_id), {"Content-Type": PROBLEM_JSON, **problem.headers}


def _problem_response(problem: Problem, request_id: str) -> web.Response:
    status, body, headers = _problem(problem, request_id)
    return web.Response(status=status, body=body, headers={**headers, "X-Request-Id": request_id})
