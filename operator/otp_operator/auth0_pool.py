"""One Auth0Sync per tenant and credentials, shared by every channel using them.

One client-side rate limiter per tenant (`TenantRateLimit`, fed by Auth0's x-ratelimit-*
headers), shared by every sync of that tenant whatever its credentials: Auth0's bucket is the
tenant's. Bounds concurrent Auth0 work per tenant (many channels on one tenant queue here) and
the open syncs. Every tenant's requests share one connection pool (an aiohttp session), with
bounds on the requests (and so the connections) in flight per tenant and for all of them, and
idle connections closed after ``KEEPALIVE_SECONDS`` (see auth0/client.py). A sync (an SDK client,
~10 KB) idle for ``IDLE_CLOSE`` seconds is closed, and, least recently used first, any beyond
``max_open``; the token of a closed one is kept for its
reopening (a few hundred bytes, not a request).

``ensure``, ``prepare`` and ``remove`` take the caller's ``guard``: run before each of that
call's Auth0 writes, it raises to stop the call (a reconcile passes one that stops once its
channel's deletion began; the deletion itself passes none).

What a tenant has only one of (its phone provider with the custom-phone-provider binding, and
its phone routing settings) is changed by one channel at a time: two channels created at the
same instant would otherwise both read "free" and both register. The second then reads what the
first wrote and is refused as a conflict, as it would be a minute later.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

from .auth0 import Auth0Credentials, Auth0Sync, DesiredIntegration, SyncResult
from .auth0.client import Connections, before_write, new_connections
from .auth0.model import DesiredLogStream
from .auth0.ratelimit import TenantRateLimit
from .auth0.sync import LogStreamResult, RoutingRecorder

Key = tuple[str, str, str]
Guard = Callable[[], None]


@contextmanager
def _guarded(guard: Guard | None) -> Iterator[None]:
    """The client runs ``guard`` before each write request of this task until the call ends."""
    token = before_write.set(guard)
    try:
        yield
    finally:
        before_write.reset(token)


IDLE_CLOSE = 30.0  # seconds an unused sync (its SDK client, its token) stays open


class Auth0Pool:
    def __init__(self, concurrency_per_tenant: int, max_open: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._concurrency = concurrency_per_tenant
        self._max_open = max_open
        self._clock = clock
        self._syncs: OrderedDict[Key, Auth0Sync] = OrderedDict()  # least recently used first
        self._last_used: dict[Key, float] = {}
        self._in_use: dict[Key, int] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._lock = asyncio.Lock()
        self._warming: set[asyncio.Future[None]] = set()
        self._tokens: dict[Key, Any] = {}  # tokens of closed syncs, for their reopening
        self._limits: dict[str, TenantRateLimit] = {}  # per tenant domain, kept while we run
        self._tenant_wide: dict[str, asyncio.Lock] = {}  # per tenant domain, see the docstring
        self._connections: Connections | None = None  # every tenant's

    @staticmethod
    def _key(credentials: Auth0Credentials) -> Key:
        secret_digest = hashlib.sha256(credentials.client_secret.encode()).hexdigest()
        return credentials.domain, credentials.client_id, secret_digest

    @asynccontextmanager
    async def _sync(self, credentials: Auth0Credentials) -> AsyncIterator[Auth0Sync]:
        key = self._key(credentials)
        async with self._lock:
            sync = self._syncs.get(key)
            if sync is None:
                # Credentials of the same tenant and client changed: drop the outdated sync.
                for old in [k for k in self._syncs if k[:2] == key[:2] and not self._in_use.get(k)]:
                    await self._syncs.pop(old).aclose()
                for old in [k for k in self._tokens if k[:2] == key[:2] and k != key]:
                    del self._tokens[old]
                limit = self._limits.setdefault(credentials.domain, TenantRateLimit(credentials.domain))
                if self._connections is None:
                    self._connections = new_connections()
                sync = Auth0Sync(credentials, limit=limit, connections=self._connections)
                if key in self._tokens:
                    sync.api.tokens.restore(self._tokens.pop(key))
                self._syncs[key] = sync
            self._syncs.move_to_end(key)
            self._in_use[key] = self._in_use.get(key, 0) + 1
            await self._evict_idle()
        try:
            yield sync
        finally:
            self._last_used[key] = self._clock()
            self._in_use[key] -= 1
            if not self._in_use[key]:
                del self._in_use[key]

    async def _evict_idle(self) -> None:
        """Close, oldest first, syncs idle for IDLE_CLOSE and those beyond max_open."""
        now = self._clock()
        for key in list(self._syncs):
            recent = now - self._last_used.get(key, now) < IDLE_CLOSE
            if recent and len(self._syncs) <= self._max_open:
                break
            if not self._in_use.get(key):
                sync = self._syncs.pop(key)
                self._last_used.pop(key, None)
                self._tokens[key] = sync.api.tokens.saved()
                await sync.aclose()

    def _semaphore(self, domain: str) -> asyncio.Semaphore:
        return self._semaphores.setdefault(domain, asyncio.Semaphore(self._concurrency))

    @asynccontextmanager
    async def _turn(self, credentials: Auth0Credentials, tenant_wide: bool) -> AsyncIterator[Auth0Sync]:
        """A slot of the tenant's concurrency and its sync; first, for work on what the tenant
        has only one of, the tenant-wide lock (taken before the slot, so waiting holds none)."""
        async with AsyncExitStack() as stack:
            if tenant_wide:
                await stack.enter_async_context(self._tenant_wide.setdefault(credentials.domain, asyncio.Lock()))
            await stack.enter_async_context(self._semaphore(credentials.domain))
            yield await stack.enter_async_context(self._sync(credentials))

    @staticmethod
    def _tenant_wide_work(integration: str, manage_routing: bool) -> bool:
        return integration == "phone-provider" or manage_routing

    async def ensure(
        self, credentials: Auth0Credentials, desired: DesiredIntegration, recorded: dict[str, Any] | None,
        record_routing: RoutingRecorder | None = None, *, guard: Guard | None = None,
    ) -> SyncResult:
        async with self._turn(credentials, self._tenant_wide_work(desired.integration, desired.manage_routing)) as sync:
            with _guarded(guard):
                return await sync.ensure(desired, recorded=recorded, record_routing=record_routing)

    async def prepare(self, credentials: Auth0Credentials, desired: DesiredIntegration, *,
                      guard: Guard | None = None) -> dict[str, Any] | None:
        async with self._turn(credentials, self._tenant_wide_work(desired.integration, desired.manage_routing)) as sync:
            with _guarded(guard):
                return await sync.prepare(desired)

    async def remove(self, credentials: Auth0Credentials, *, owner: str, integration: str, name: str,
                     recorded: dict[str, Any] | None = None, guard: Guard | None = None) -> list[str]:
        changes = bool((recorded or {}).get("routingChanges"))
        async with self._turn(credentials, self._tenant_wide_work(integration, changes)) as sync:
            with _guarded(guard):
                return await sync.remove(owner=owner, integration=integration, name=name,  # type: ignore[arg-type]
                                         recorded=recorded)

    async def try_phone_provider(self, credentials: Auth0Credentials, provider_id: str, to: str) -> bool:
        """The canary's test message (through the tenant's limiter like every call), never while
        another channel's work changes the tenant's one phone provider."""
        async with self._turn(credentials, tenant_wide=True) as sync:
            return await sync.gateway.try_phone_provider(provider_id, to)

    async def ensure_log_stream(self, credentials: Auth0Credentials, desired: DesiredLogStream,
                                relay_ready: bool, *, guard: Guard | None = None) -> LogStreamResult:
        async with self._turn(credentials, tenant_wide=False) as sync:
            with _guarded(guard):
                return await sync.ensure_log_stream(desired, relay_ready)

    async def remove_log_stream(self, credentials: Auth0Credentials, desired: DesiredLogStream, *,
                                guard: Guard | None = None) -> list[str]:
        async with self._turn(credentials, tenant_wide=False) as sync:
            with _guarded(guard):
                return await sync.remove_log_stream(desired)

    def warm_up(self, credentials: Auth0Credentials) -> None:
        """Fetch (or reuse) this tenant's token in the background; failures surface later, in
        the ensure() that needs it."""
        task = asyncio.ensure_future(self._warm_up(credentials))
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    async def _warm_up(self, credentials: Auth0Credentials) -> None:
        try:
            async with self._sync(credentials) as sync:
                await sync.api.tokens.token()
        except Exception:  # noqa: BLE001 - only a head start
            pass

    async def close(self) -> None:
        async with self._lock:
            for sync in self._syncs.values():
                await sync.aclose()
            self._syncs.clear()
            self._tokens.clear()
            if self._connections is not None:
                await self._connections.session.close()
                self._connections = None
