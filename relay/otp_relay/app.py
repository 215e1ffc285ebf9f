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
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from . import canary, conversion, pumping, receipts, webhook
from .config import IN_FLIGHT_MARGIN, Settings
from .connections import MAX_BODY, ConnectionGuard
from .credentials import Credentials, reload_loop
from .metrics import RelayMetrics
from .pipeline import Intake, SendPipeline, StoreHealth
from .state import MemoryState, State, Timing
from .upstream import EightByEight, RetryPolicy, interpret_voice

ADMIN_CONNECTIONS = 64  # open admin connections at most (probes, scrapes, the operator)
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
    """One process's relay: its parts, built once, and the two applications serving them."""

    def __init__(self, settings: Settings, policy: RetryPolicy | None = None, worker: int = 0) -> None:
        self.settings = settings
        self.metrics = RelayMetrics()
        self.credentials = Credentials(settings, self.metrics.key_reload)
        self._state = build_state(settings)
        self.health = StoreHealth(self._state, self.metrics)
        self.receipts = receipts.Receipts(settings, receipts.store_for(self._state, settings.state_prefix),
                                          self.metrics.registry, self.credentials.receipt_tokens)
        self.canary = canary.store_for(self._state, settings.state_prefix) if settings.canary_number else None
        self.receipts.canary = self.canary
        self.guard = ConnectionGuard(settings.max_connections, settings.header_timeout,
                                     settings.idle_timeout, self.metrics.dropped,
                                     max_readers=settings.max_body_readers,
                                     min_body_rate=settings.body_min_rate)
        self.admin_guard = ConnectionGuard(ADMIN_CONNECTIONS, settings.header_timeout,
                                           settings.idle_timeout, self.metrics.admin_dropped,
                                           max_readers=ADMIN_CONNECTIONS)
        self.intake = Intake(self.guard, settings.body_timeout)
        self.metrics.connections.set_function(lambda: len(self.guard))
        self.metrics.readers.set_function(lambda: self.guard.readers)
        retry_policy = policy or RetryPolicy(deadline=settings.deadline)
        self.upstream = EightByEight(settings.base_url, settings.subaccount, retry_policy,
                                     self.metrics.upstream_observer("text"))
        # calls: the same client and retry policy on 8x8's Voice Messaging API (None: voice off)
        self.voice_upstream = (EightByEight(settings.voice_base_url, settings.subaccount, retry_policy,
                                            self.metrics.upstream_observer("voice"), pool_size=20,
                                            path="callflows", interpret=interpret_voice)
                               if settings.voice_enabled else None)
        self.conversion = self._conversion(settings)
        self.pipeline = SendPipeline(settings, self.credentials, self._state, self.health, self.metrics,
                                     self.intake, self.receipts, self.canary, self.upstream,
                                     self.voice_upstream, lambda: self.ready,
                                     worker if settings.workers > 1 else None,
                                     self.conversion if settings.conversion else None)
        self.metrics.in_flight.set_function(lambda: self.pipeline.in_flight)
        # the subaccount's VSS webhook kept on this relay's receipt path (off without voice or
        # receipts); with --workers, worker 0 only (it serves the admin listener that reports it)
        credentials = self.credentials
        self.voice_webhook = webhook.VoiceWebhook(
            self.voice_upstream if credentials.receipt_tokens is not None and worker == 0 else None,
            settings.receipt_url, lambda: credentials.newest_receipt_token,
            lambda: credentials.api_key.value, self.metrics.voice_webhook)

    def _conversion(self, settings: Settings) -> conversion.Tracker:
        """What the log stream teaches about each SMS (``conversion``), told to 8x8 and to the
        conversion rule (``pumping``; in the shared store when there is one)."""
        credentials, client = self.credentials, getattr(self._state, "client", None)
        tracker = conversion.build(settings, self._state, self.metrics.registry, self.metrics.key_reload)
        tracker.poster = conversion.Poster(self.upstream.call, lambda: credentials.api_key.value)
        tracker.signing_keys = lambda: credentials.signing_keys.value or []
        rule_metrics = pumping.RuleMetrics(self.metrics.registry)  # exported (empty) when off too
        if settings.conversion:
            tracker.listener = pumping.build_rule(settings.conversion_rule, client, settings.state_prefix,
                                                  rule_metrics)
        return tracker

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:  # tests swap in a store with their own clock
        self._state = self.pipeline.state = state

    # --- credentials, state store ------------------------------------------------------
    async def refresh(self) -> None:
        self.credentials.refresh()
        self.conversion.refresh()
        self.voice_webhook.changed()
        if self._state.scope == "shared":
            self.health.answered(await self._state.check())
        self.metrics.ready.set(1 if self.ready else 0)

    @property
    def ready(self) -> bool:
        return self.credentials.loaded and self.health.ok

    # --- admin endpoints ---------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready", "state": self._state.scope})
        answer: dict[str, object] = {"status": "not ready", **self.credentials.not_loaded()}
        if not self.health.ok:
            answer["state"] = "unreachable"
        return web.json_response(answer, status=503)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.metrics.state_up.set(1 if self.health.ok else 0)
        await self.refresh()
        clients = [c for c in (self.upstream, self.voice_upstream) if c is not None]
        for client in clients:
            await client.start()
        watcher = asyncio.create_task(reload_loop(self.settings.key_reload_interval, self.refresh))
        registrar = asyncio.create_task(self.voice_webhook.run())  # never awaited by sends or probes
        scanner = asyncio.create_task(self.conversion.run()) if self.settings.conversion else None
        yield
        watcher.cancel()
        registrar.cancel()
        if scanner is not None:
            scanner.cancel()
        await self.conversion.close()
        for client in clients:
            await client.close()
        await self._state.close()

    # --- the applications --------------------------------------------------------------
    def public_routes(self) -> dict[str, Handler]:
        """Every public ``POST`` path (each also served under ``--path-prefix``): the one
        place a public route is added."""
        routes: dict[str, Handler] = {"/v1/messages": self.pipeline.handle,
                                      f"{receipts.RECEIPT_PATH}/{{token}}": self.receipt}
        if self.settings.conversion:
            routes[conversion.SINK_PATH] = self.auth0_logs
            routes[conversion.LIFT_PATH] = self.conversion_lift
        return routes

    async def receipt(self, request: web.Request) -> web.Response:
        return await receipts.handle(self.receipts, self.intake, request)

    async def auth0_logs(self, request: web.Request) -> web.Response:
        return await conversion.handle_sink(self.conversion, self.intake, request)

    async def conversion_lift(self, request: web.Request) -> web.Response:
        return await conversion.handle_lift(self.conversion, self.intake, self.credentials.verifier_keys, request)

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
