"""One Auth0Sync per tenant and credentials, shared by every channel using them.

Also bounds concurrent Auth0 work per tenant so many channels on one tenant queue here
instead of burning the tenant's rate limit.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from .auth0 import Auth0Credentials, Auth0Sync, DesiredIntegration, SyncResult


class Auth0Pool:
    def __init__(self, concurrency_per_tenant: int) -> None:
        self._concurrency = concurrency_per_tenant
        self._syncs: dict[tuple[str, str, str], Auth0Sync] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def _key(credentials: Auth0Credentials) -> tuple[str, str, str]:
        secret_digest = hashlib.sha256(credentials.client_secret.encode()).hexdigest()
        return credentials.domain, credentials.client_id, secret_digest

    async def _sync(self, credentials: Auth0Credentials) -> Auth0Sync:
        key = self._key(credentials)
        async with self._lock:
            sync = self._syncs.get(key)
            if sync is None:
                # Drop syncs of the same tenant and client with an outdated secret.
                for old_key in [k for k in self._syncs if k[:2] == key[:2]]:
                    await self._syncs.pop(old_key).__aexit__(None, None, None)
                sync = Auth0Sync(credentials)
                await sync.__aenter__()
                self._syncs[key] = sync
            return sync

    def _semaphore(self, domain: str) -> asyncio.Semaphore:
        return self._semaphores.setdefault(domain, asyncio.Semaphore(self._concurrency))

    async def ensure(
        self, credentials: Auth0Credentials, desired: DesiredIntegration, recorded: dict[str, Any] | None
    ) -> SyncResult:
        sync = await self._sync(credentials)
        async with self._semaphore(credentials.domain):
            return await sync.ensure(desired, recorded=recorded)

    async def remove(self, credentials: Auth0Credentials, *, owner: str, integration: str, name: str,
                     recorded: dict[str, Any] | None = None) -> list[str]:
        sync = await self._sync(credentials)
        async with self._semaphore(credentials.domain):
            return await sync.remove(owner=owner, integration=integration, name=name,  # type: ignore[arg-type]
                                     recorded=recorded)

    async def close(self) -> None:
        async with self._lock:
            for sync in self._syncs.values():
                await sync.__aexit__(None, None, None)
            self._syncs.clear()
