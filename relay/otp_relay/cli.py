"""``otp-relay``: serve until SIGTERM/SIGINT, then stop accepting, drop every connection that
is not sending a message, finish in-flight sends (within ``--shutdown-timeout``) and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from . import config, logs
from .app import Relay
from .connections import ConnectionGuard

log = logging.getLogger("otp_relay")


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through the relay's ``ConnectionGuard``."""

    __slots__ = ("_guard", "_handshake_timeout")

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, handshake_timeout: float,
                 **kwargs: object) -> None:
        super().__init__(runner, **kwargs)  # type: ignore[arg-type]
        self._guard = guard
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        extra = {"ssl_handshake_timeout": self._handshake_timeout} if self._ssl_context else {}
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.wrap(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, **extra)


async def serve(settings: config.Settings) -> None:
    relay = Relay(settings)
    runner = web.AppRunner(relay.make_app(), access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_timeout,
                           keepalive_timeout=settings.idle_timeout, auto_decompress=False)
    admin = web.AppRunner(relay.make_admin_app(), access_log=None, handle_signals=False,
                          shutdown_timeout=1, keepalive_timeout=settings.idle_timeout)
    await runner.setup()
    await admin.setup()
    context = relay.certificate.context if relay.certificate else None
    site = GuardedSite(runner, relay.guard, settings.header_timeout, host=settings.host,
                       port=settings.port, ssl_context=context, backlog=1024, reuse_address=True)
    admin_site = web.TCPSite(admin, settings.admin_host, settings.admin_port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        await admin_site.start()
        log.info("listening", extra={
            "listen": f"{settings.scheme}://{settings.host}:{settings.port}",
            "admin": f"http://{settings.admin_host}:{settings.admin_port}",
            "base_url": settings.base_url, "subaccount": settings.subaccount,
        })
        await stop.wait()
        log.info("shutting down: finishing in-flight sends")
        await site.stop()
        relay.guard.close_unbusy()
    finally:
        await runner.cleanup()
        await admin.cleanup()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = config.load(argv)
    except config.ConfigError as exc:
        print(f"otp-relay: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
