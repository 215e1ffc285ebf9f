"""Print the Auth0 Management API requests Auth0Sync makes per operation and mode, counted from
the Auth0 emulator's request log (token requests shown separately).

    .venv/bin/python bench/auth0/requests_per_operation.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from otp_operator.auth0 import Auth0Credentials, Auth0Sync, DesiredIntegration
from otp_sandbox.auth0_emulator import Auth0Emulator, Auth0Tenant, Client
from otp_sandbox.pki import CertificateAuthority

MODES = ("phone-provider", "send-phone-message", "legacy-hook")
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def desired(mode: str, relay_url: str = "https://otp.shop.example/prod") -> DesiredIntegration:
    return DesiredIntegration(owner="shop/prod", integration=mode, name="otp-relay-shop-prod",
                              relay_url=relay_url, signing_key="bench-signing-key-0001")


def drift(tenant: Auth0Tenant, person: Client, mode: str) -> str:
    """One drift per mode, made through the Management API; returns its description."""
    token = httpx.post(f"{tenant.base_url}/oauth/token", json={
        "grant_type": "client_credentials", "client_id": person.client_id,
        "client_secret": person.client_secret, "audience": f"{tenant.base_url}/api/v2/"},
        verify=tenant.ssl_context).json()["access_token"]
    with httpx.Client(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        if mode == "legacy-hook":
            hook = api.get("/hooks").json()[0]
            api.patch(f"/hooks/{hook['id']}", json={"enabled": False}).raise_for_status()
            return "hook disabled"
        trigger = "custom-phone-provider" if mode == "phone-provider" else "send-phone-message"
        action = api.get("/actions/actions", params={"triggerId": trigger}).json()["actions"][0]
        api.patch(f"/actions/actions/{action['id']}", json={"code": "// edited"}).raise_for_status()
        return "code edited"


async def count(tenant: Auth0Tenant, operation: Callable[[], Awaitable[object]]) -> tuple[int, int, int, float]:
    tenant.clear_requests()
    started = time.perf_counter()
    await operation()
    elapsed = time.perf_counter() - started
    log = tenant.requests()
    tokens = sum(1 for r in log if r.path == "/oauth/token")
    writes = sum(1 for r in log if r.method in WRITES and r.path != "/oauth/token")
    return len(log) - tokens - writes, writes, tokens, elapsed


async def measure(emu: Auth0Emulator, mode: str) -> list[tuple[str, tuple[int, int, int, float], str]]:
    operator, person = (Client(f"bench-{mode}-{n}", f"bench-secret-{mode}-{n}-xxxxxxxx") for n in (1, 2))
    tenant = emu.add_tenant(clients=[operator, person])
    rows = []
    try:
        creds = Auth0Credentials(tenant.domain, operator.client_id, operator.client_secret)
        async with Auth0Sync(creds) as sync:
            result = None

            async def ensure(url: str = "https://otp.shop.example/prod") -> None:
                nonlocal result
                result = await sync.ensure(desired(mode, url),
                                           recorded=result.as_status() if result else None)

            rows.append(("create", await count(tenant, ensure), ""))
            rows.append(("no-op", await count(tenant, ensure), ""))
            rows.append(("update (relay URL)", await count(
                tenant, lambda: ensure("https://otp.shop.example/v2")), ""))
            what = drift(tenant, person, mode)
            rows.append(("drift check + repair", await count(
                tenant, lambda: ensure("https://otp.shop.example/v2")), what))
            rows.append(("remove", await count(tenant, lambda: sync.remove(
                "shop/prod", mode, "otp-relay-shop-prod", recorded=result.as_status())), ""))
            rows.append(("remove (already gone)", await count(tenant, lambda: sync.remove(
                "shop/prod", mode, "otp-relay-shop-prod")), ""))
    finally:
        tenant.remove()
    return rows


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority(Path(tmp) / "ca")
        bundle = ca.trust_bundle(Path(tmp) / "bundle.pem")
        os.environ["SSL_CERT_FILE"] = str(bundle)
        emu = Auth0Emulator.start(ca, Path(tmp) / "emu")
        try:
            print("| mode | operation | reads | writes | token | wall (ms) | note |")
            print("|---|---|---:|---:|---:|---:|---|")
            for mode in MODES:
                for operation, (reads, writes, tokens, elapsed), note in await measure(emu, mode):
                    print(f"| {mode} | {operation} | {reads} | {writes} | {tokens} | "
                          f"{elapsed * 1000:.0f} | {note} |")
        finally:
            emu.stop()
    print("\nreads include polling the action until it is built (emulator build time 0.3 s); "
          "token: one per Auth0Sync, cached across calls.")


if __name__ == "__main__":
    asyncio.run(main())
