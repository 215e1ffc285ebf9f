"""``otp-relay``: serve until SIGTERM/SIGINT, then stop accepting, finish in-flight requests
and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys

from aiohttp import web

from . import config, logs
from .app import Relay

log = logging.getLogger("otp_relay")


async def serve(settings: config.Settings) -> None:
    relay = Relay(settings)
    runner = web.AppRunner(relay.make_app(), access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_timeout)
    await runner.setup()
    context = None
    if settings.tls_cert_file and settings.tls_key_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=context, backlog=1024,
                       reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        log.info("listening", extra={
            "listen": f"{settings.scheme}://{settings.host}:{settings.port}",
            "base_url": settings.base_url, "subaccount": settings.subaccount,
        })
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
    finally:
        await runner.cleanup()
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
