"""The emulator process: an admin API on its own port, and one HTTPS port per tenant."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from ..pki import CertificateAuthority
from .api import fire, tenant_app
from .config import RateLimit, TenantConfig
from .errors import ApiError
from .runner import NodeRunner
from .tenant import Fault, Tenant

_EMULATOR_KEY: web.AppKey["Emulator"] = web.AppKey("emulator")


class Emulator:
    """Owns the tenants and their listening sites."""

    def __init__(self, host: str, ssl_context: ssl.SSLContext, runner: NodeRunner,
                 client_ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.client_ssl_context = client_ssl_context  # log stream deliveries trust this (the sandbox CA)
        self.runner = runner
        self.tenants: dict[str, Tenant] = {}
        self._sites: dict[str, web.AppRunner] = {}
        self._names = itertools.count(1)
        # Ports of removed tenants: a new tenant never gets one, so a client still holding an old
        # tenant's domain (a test's leftover operator) cannot drain the new tenant's rate limit.
        self._used_ports: set[int] = set()

    async def add_tenant(self, body: dict[str, Any]) -> Tenant:
        body = dict(body)
        body.setdefault("name", f"tenant{next(self._names)}")
        try:
            config = TenantConfig.from_dict(body)
        except (KeyError, TypeError, ValueError) as err:
            raise ApiError(400, f"invalid tenant settings: {err}") from None
        if config.name in self.tenants:
            raise ApiError(409, f"tenant {config.name!r} already exists")
        sock = self._fresh_socket()
        tenant = Tenant(config, sock.getsockname()[1])
        tenant.log_streams.delivery.ssl_context = self.client_ssl_context
        self._used_ports.add(tenant.port)
        app_runner = web.AppRunner(tenant_app(tenant, self.runner), access_log=None)
        await app_runner.setup()
        await web.SockSite(app_runner, sock, ssl_context=self.ssl_context).start()
        self.tenants[config.name] = tenant
        self._sites[config.name] = app_runner
        return tenant

    def _fresh_socket(self) -> socket.socket:
        held: list[socket.socket] = []  # kept bound until a fresh port turns up
        try:
            for _ in range(1000):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, 0))
                if sock.getsockname()[1] not in self._used_ports:
                    return sock
                held.append(sock)
            raise ApiError(503, "no fresh loopback port for a tenant")
        finally:
            for sock in held:
                sock.close()

    def tenant(self, name: str) -> Tenant:
        tenant = self.tenants.get(name)
        if tenant is None:
            raise ApiError(404, f"no tenant named {name!r}")
        return tenant

    async def remove_tenant(self, name: str) -> None:
        tenant = self.tenant(name)
        del self.tenants[name]
        await tenant.log_streams.close()
        await self._sites.pop(name).cleanup()

    async def close(self) -> None:
        for name in list(self._sites):
            await self._sites.pop(name).cleanup()
        for tenant in self.tenants.values():
            await tenant.log_streams.close()
        self.tenants.clear()


def _tenant_summary(tenant: Tenant) -> dict[str, Any]:
    return {"name": tenant.name, "domain": tenant.domain, "port": tenant.port}


@web.middleware
async def _admin_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return web.json_response(err.body(), status=err.status)


async def _read(request: web.Request) -> Any:
    try:
        return await request.json() if request.can_read_body else {}
    except ValueError:
        raise ApiError(400, "Invalid request payload JSON format") from None


async def _create_tenant(request: web.Request) -> web.Response:
    tenant = await request.app[_EMULATOR_KEY].add_tenant(await _read(request))
    return web.json_response(_tenant_summary(tenant), status=201)


async def _delete_tenant(request: web.Request) -> web.Response:
    await request.app[_EMULATOR_KEY].remove_tenant(request.match_info["name"])
    return web.Response(status=204)


def _tenant_of(request: web.Request) -> Tenant:
    return request.app[_EMULATOR_KEY].tenant(request.match_info["name"])


async def _state(request: web.Request) -> web.Response:
    return web.json_response(_tenant_of(request).state())


async def _requests(request: web.Request) -> web.Response:
    return web.json_response(_tenant_of(request).requests_json())


async def _clear_requests(request: web.Request) -> web.Response:
    _tenant_of(request).requests.clear()
    return web.Response(status=204)


async def _settings(request: web.Request) -> web.Response:
    """Faults and knobs: latency_ms, rate_limit, fail_next {status, count, method?,
    path_suffix?, error_code?}, revoke_tokens, build_seconds, build_failure, build_retries (the
    next N builds show ``retrying`` and take twice as long), deploy_seconds,
    runner_timeout_seconds, phone {phone_consolidated_experience? (null: absent), sms_factor?,
    message_types?, selected_provider?} (what a person set in the Dashboard), and
    legacy_mfa_phone_provider?, legacy_passwordless_phone_provider? (what only Auth0 sets),
    connections [{name, options}] (the tenant's passwordless sms connections)."""
    tenant = _tenant_of(request)
    body = await _read(request)
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object")
    try:
        if "latency_ms" in body:
            tenant.latency_ms = max(0, int(body["latency_ms"]))
        if "rate_limit" in body:
            tenant.set_rate_limit(RateLimit.from_dict(body["rate_limit"]))
        if "fail_next" in body:
            fault = body["fail_next"]
            status, count = int(fault["status"]), int(fault.get("count", 1))
            if not 400 <= status <= 599:
                raise ValueError("fail_next.status must be an HTTP error status")
            tenant.fail_next(Fault(status, fault.get("method"), fault.get("path_suffix"),
                                   fault.get("error_code")), count)
        if body.get("revoke_tokens"):
            tenant.tokens.revoke_all()
        if "build_seconds" in body:
            tenant.actions.build_seconds = max(0.0, float(body["build_seconds"]))
        if "build_failure" in body:
            tenant.actions.build_failure = body["build_failure"] or None
        if "build_retries" in body:
            tenant.actions.build_retries = max(0, int(body["build_retries"]))
        if "deploy_seconds" in body:
            tenant.actions.deploy_seconds = max(0.0, float(body["deploy_seconds"]))
        if "phone" in body:
            tenant.phone.preset(dict(body["phone"]))
        if "connections" in body:
            tenant.connections.preset(body["connections"])
        if "runner_timeout_seconds" in body:
            tenant.runner_timeout_seconds = float(body["runner_timeout_seconds"])
        if "log_stream_limit" in body:
            tenant.log_streams.limit = max(0, int(body["log_stream_limit"]))
        if "log_stream_time_factor" in body:
            tenant.log_streams.delivery.set_time_factor(float(body["log_stream_time_factor"]))
    except (KeyError, TypeError, ValueError) as err:
        raise ApiError(400, f"invalid settings: {err}") from None
    return web.Response(status=204)


async def _phone_message(request: web.Request) -> web.Response:
    emulator = request.app[_EMULATOR_KEY]
    result = await fire(_tenant_of(request), emulator.runner, await _read(request))
    return web.json_response(result)


async def _logs(request: web.Request) -> web.Response:
    return web.json_response(_tenant_of(request).logs)


async def _log_stream_deliveries(request: web.Request) -> web.Response:
    tenant = _tenant_of(request)
    return web.json_response({"streams": tenant.log_streams.state(),
                              "attempts": tenant.log_streams.delivery.attempts,
                              "time_factor": tenant.log_streams.delivery.time_factor})


async def _use_code(request: web.Request) -> web.Response:
    body = await _read(request)
    if not isinstance(body, dict) or not isinstance(body.get("ok", True), bool):
        raise ApiError(400, "expected {recipient?, connection?, transaction_id?, ok?: boolean}")
    event = _tenant_of(request).use_code(body.get("recipient"), body.get("connection"),
                                         body.get("ok", True), body.get("transaction_id"))
    return web.json_response(event)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def admin_app(emulator: Emulator) -> web.Application:
    app = web.Application(middlewares=[_admin_errors])
    app[_EMULATOR_KEY] = emulator
    app.router.add_get("/healthz", _healthz)
    app.router.add_post("/tenants", _create_tenant)
    app.router.add_delete("/tenants/{name}", _delete_tenant)
    app.router.add_get("/tenants/{name}/state", _state)
    app.router.add_get("/tenants/{name}/requests", _requests)
    app.router.add_delete("/tenants/{name}/requests", _clear_requests)
    app.router.add_post("/tenants/{name}/settings", _settings)
    app.router.add_post("/tenants/{name}/phone-message", _phone_message)
    app.router.add_get("/tenants/{name}/logs", _logs)
    app.router.add_get("/tenants/{name}/log-streams", _log_stream_deliveries)
    app.router.add_post("/tenants/{name}/use-code", _use_code)
    return app


async def serve(state_dir: Path, ca_dir: Path, host: str, admin_port: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(ca_dir)
    pair = ca.issue(f"auth0-emulator-{os.getpid()}", hosts=("localhost", host))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    emulator = Emulator(host, context, NodeRunner(ca.cert_path),
                        ssl.create_default_context(cafile=str(ca.cert_path)))
    admin = web.AppRunner(admin_app(emulator), access_log=None)
    await admin.setup()
    site = web.TCPSite(admin, host, admin_port, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ready = {"admin_url": f"https://{host}:{port}", "pid": os.getpid(),
             "ca_cert": str(ca.cert_path)}
    (state_dir / "ready.json").write_text(json.dumps(ready))
    print(json.dumps(ready), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.close()
        await admin.cleanup()
        for path in (pair.cert, pair.key):
            path.unlink(missing_ok=True)


def run(state_dir: Path, ca_dir: Path | None, host: str, admin_port: int) -> int:
    try:
        asyncio.run(serve(state_dir, ca_dir or state_dir / "ca", host, admin_port))
    except OSError as err:
        print(f"auth0-emulator: {err}", file=sys.stderr)
        return 1
    return 0
