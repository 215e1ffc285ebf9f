"""``otp-relay``: serve until SIGTERM/SIGINT, then stop accepting, drop every connection that
is not sending a message, finish in-flight sends (within ``--shutdown-timeout``) and exit 0.

With ``--workers N`` (N > 1) the process forks N workers that each bind the public port with
``SO_REUSEPORT`` (the kernel spreads connections); worker 0 also serves the admin listener.
The parent forwards SIGTERM/SIGINT to every worker and exits 0 once they all drained; if a
worker dies on its own, the others are stopped and the parent exits 1 (the pod restarts).
Limits and idempotency stay exact because more than one worker requires the shared store."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from . import config, logs
from .app import Relay
from .connections import ConnectionGuard

log = logging.getLogger("otp_relay")


class GuardedSite(web.TCPSite):
    """A TCP site whose connections go through the relay's ``ConnectionGuard``."""

    __slots__ = ("_guard", "_handshake_timeout")

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, handshake_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(runner, **kwargs)
        self._guard = guard
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        extra = {"ssl_handshake_timeout": self._handshake_timeout} if self._ssl_context else {}
        # aiohttp's TCPSite keeps its server in _server (declared there, not in our __slots__)
        self._server = await asyncio.get_running_loop().create_server(  # type: ignore[call-overload]
            self._guard.wrap(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            **extra)


GC_YOUNG = 10_000  # allocations between young collections (Python's default: 700)


def settle_memory() -> None:
    """Once serving: the start-up's objects (modules, classes, the relay's parts) live as long as
    the process, so they leave the collector's generations (no full collection walks them
    again); young collections run every ``GC_YOUNG`` allocations instead of 700, so the objects
    of in-flight requests are not promoted into older generations only to die there (a request
    allocates hundreds); and the heap the start-up freed goes back to the system."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


# aiohttp's parser limits (its defaults allow 128 fields of 8 KiB: ~1 MiB a connection); the
# guard also caps a whole header block at connections.MAX_HEADER_BYTES
HEADER_LIMITS: dict[str, Any] = {"max_line_size": 2048, "max_field_size": 2048, "max_headers": 32}


async def serve(settings: config.Settings, worker: int = 0) -> None:
    relay = Relay(settings, worker=worker)
    runner = web.AppRunner(relay.make_app(), access_log=None, handle_signals=False,
                           shutdown_timeout=settings.shutdown_timeout,
                           # the guard closes idle connections (and counts them); aiohttp's own
                           # timer only backs it up, so the two never race
                           keepalive_timeout=settings.idle_timeout + 1, auto_decompress=False,
                           **HEADER_LIMITS)
    admin = web.AppRunner(relay.make_admin_app(), access_log=None, handle_signals=False,
                          shutdown_timeout=1, keepalive_timeout=settings.idle_timeout + 1,
                          **HEADER_LIMITS)
    await runner.setup()
    await admin.setup()
    certificate = relay.credentials.certificate
    context = certificate.context if certificate else None
    site = GuardedSite(runner, relay.guard, settings.header_timeout, host=settings.host,
                       port=settings.port, ssl_context=context, backlog=1024, reuse_address=True,
                       reuse_port=settings.workers > 1)
    admin_site = (GuardedSite(admin, relay.admin_guard, settings.header_timeout, host=settings.admin_host,
                              port=settings.admin_port, reuse_address=True)
                  if worker == 0 else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await site.start()
        if admin_site is not None:
            await admin_site.start()
        log.info("listening", extra={
            "listen": f"{settings.scheme}://{settings.host}:{settings.port}",
            "admin": f"http://{settings.admin_host}:{settings.admin_port}" if admin_site else None,
            "base_url": settings.base_url, "subaccount": settings.subaccount,
            "worker": worker if settings.workers > 1 else None,
        })
        settle_memory()
        await stop.wait()
        log.info("shutting down: finishing in-flight sends")
        await site.stop()
        relay.guard.close_unbusy()
        relay.admin_guard.close_unbusy()
    finally:
        await runner.cleanup()
        await admin.cleanup()
    log.info("stopped")


def run_worker(settings: config.Settings, worker: int = 0) -> int:
    logs.configure(settings.log_level)
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        asyncio.run(serve(settings, worker))
    else:
        uvloop.run(serve(settings, worker))
    finally:
        logs.close()
    return 0


def supervise(settings: config.Settings) -> int:
    """Fork the workers (before any thread or event loop exists) and wait for them."""
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Held until the parent can forward them; a worker gets its own handlers from its loop.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    pids: list[int] = []
    for worker in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
                code = run_worker(settings, worker)
            finally:
                os._exit(code)
        pids.append(pid)
    logs.configure(settings.log_level)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in stop_signals:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    failed = False
    while pids:
        pid, status = os.wait()
        pids.remove(pid)
        if os.waitstatus_to_exitcode(status) != 0 or not stopping:
            failed = True
            if not stopping:  # a worker died on its own: stop the rest, let the pod restart
                log.error("worker exited unexpectedly: stopping the others")
                forward(signal.SIGTERM, None)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = config.load(argv)
    except config.ConfigError as exc:
        print(f"otp-relay: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        return supervise(settings)
    return run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
