"""Print the Auth0 Management API requests Auth0Sync makes per operation and mode, counted from
the Auth0 emulator's request log (token requests shown separately), the 429s among them and
the time each operation takes to converge, against a free tenant (burst 2, 2 requests/s: the
emulator's default, as Auth0's free plan).

    .venv/bin/python bench/auth0/requests_per_operation.py
"""

from __future__ import annotations

import asyncio
import os
import re
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


def desired(mode: str, relay_url: str = "https://otp.shop.example/prod",
            manage_routing: bool = False) -> DesiredIntegration:
    return DesiredIntegration(owner="shop/prod", integration=mode, name="otp-relay-shop-prod",
                              relay_url=relay_url, signing_key="bench-signing-key-0001",
                              manage_routing=manage_routing)


def drift(tenant: Auth0Tenant, person: Client, mode: str) -> str:
    """One drift per mode, made through the Management API; returns its description."""
    token = httpx.post(f"{tenant.base_url}/oauth/token", json={
        "grant_type": "client_credentials", "client_id": person.client_id,
        "client_secret": person.client_secret, "audience": f"{tenant.base_url}/api/v2/"},
        verify=tenant.ssl_context).json()["access_token"]
    with httpx.Client(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        def api(method: str, path: str, **kwargs: object) -> httpx.Response:
            for _ in range(20):  # a person's tool waits out the shared bucket's 429s
                answer = http.request(method, path, **kwargs)
                if answer.status_code != 429:
                    return answer.raise_for_status()
                time.sleep(max(0.05, float(answer.headers["x-ratelimit-reset"]) - time.time()))
            raise RuntimeError("still rate-limited")

        try:
            if mode == "legacy-hook":
                hook = api("GET", "/hooks").json()[0]
                api("PATCH", f"/hooks/{hook['id']}", json={"enabled": False})
                return "hook disabled"
            trigger = "custom-phone-provider" if mode == "phone-provider" else "send-phone-message"
            action = api("GET", "/actions/actions", params={"triggerId": trigger}).json()["actions"][0]
            api("PATCH", f"/actions/actions/{action['id']}", json={"code": "// edited"})
            return "code edited"
        finally:
            time.sleep(1.0)  # a person is not instantaneous: the bucket refills


_ID = re.compile(r"/(pro_[A-Za-z0-9]+|01[0-9A-Z]{24}|[0-9a-f]{8}-[0-9a-f-]{27})")
CALLS: dict[tuple[str, str], str] = {}


def calls(log: list) -> str:
    """The Management API calls in order, ids as {id}, repeats (polling) counted."""
    names: list[str] = []
    for r in log:
        if r.path == "/oauth/token":
            continue
        name = f"{r.method} {_ID.sub('/{id}', r.path.removeprefix('/api/v2'))}"
        if names and names[-1].split(" x")[0] == name:
            count = int(names[-1].split(" x")[1]) + 1 if " x" in names[-1] else 2
            names[-1] = f"{name} x{count}"
        else:
            names.append(name)
    return ", ".join(names)


async def count(tenant: Auth0Tenant, operation: Callable[[], Awaitable[object]],
                key: tuple[str, str] = ("", "")) -> tuple[int, int, int, int, float]:
    tenant.clear_requests()
    started = time.perf_counter()
    await operation()
    elapsed = time.perf_counter() - started
    log = tenant.requests()
    CALLS[key] = calls(log)
    tokens = sum(1 for r in log if r.path == "/oauth/token")
    writes = sum(1 for r in log if r.method in WRITES and r.path != "/oauth/token")
    limited = sum(1 for r in log if r.status == 429)
    return len(log) - tokens - writes, writes, tokens, limited, elapsed


async def measure(emu: Auth0Emulator, mode: str, manage: bool) -> list[tuple[str, tuple[int, int, int, int, float], str]]:
    label = f"{mode}{' +manageRouting' if manage else ''}"
    operator, person = (Client(f"bench-{label}-{n}", f"bench-secret-{mode}-{n}-xxxxxxxx") for n in (1, 2))
    # The legacy modes need a tenant with Auth0's legacy phone flag (an old one): on a new one,
    # manageRouting is refused before any write.
    tenant = emu.add_tenant(clients=[operator, person], legacy_mfa_phone_provider=mode != "phone-provider")
    if not manage:
        tenant.route_phone_messages_to(mode)  # set up the real way: only our own writes count
    rows = []
    try:
        creds = Auth0Credentials(tenant.domain, operator.client_id, operator.client_secret)
        async with Auth0Sync(creds) as sync:
            result = None

            async def ensure(url: str = "https://otp.shop.example/prod") -> None:
                nonlocal result
                result = await sync.ensure(desired(mode, url, manage),
                                           recorded=result.as_status() if result else None)

            async def row(operation: str, run: Callable[[], Awaitable[object]], note: str = "") -> None:
                rows.append((operation, await count(tenant, run, (label, operation)), note))

            await row("create", ensure)
            await row("no-op", ensure)
            await row("update (relay URL)", lambda: ensure("https://otp.shop.example/v2"))
            what = drift(tenant, person, mode)
            await row("drift check + repair", lambda: ensure("https://otp.shop.example/v2"), what)
            await row("remove", lambda: sync.remove("shop/prod", mode, "otp-relay-shop-prod",
                                                    recorded=result.as_status()))
            await row("remove (already gone)", lambda: sync.remove("shop/prod", mode,
                                                                   "otp-relay-shop-prod"))
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
            print("Free tenant: Management API burst 2, 2 requests/s.\n")
            print("| mode | operation | reads | writes | token | 429s | converged in (s) | note |")
            print("|---|---|---:|---:|---:|---:|---:|---|")
            for mode in MODES:
                for manage in (False, True):
                    label = f"{mode}{' +manageRouting' if manage else ''}"
                    for operation, (reads, writes, tokens, limited, elapsed), note in await measure(emu, mode, manage):
                        print(f"| {label} | {operation} | {reads} | {writes} | {tokens} | {limited} | "
                              f"{elapsed:.1f} | {note} |")
            print("\n| mode | operation | Management API calls in order |\n|---|---|---|")
            for (label, operation), sequence in CALLS.items():
                print(f"| {label} | {operation} | {sequence} |")
        finally:
            emu.stop()
    print("\nreads include polling the action until it is built (emulator build 0.3 s) and until "
          "the deploy serves (0.5 s); token: one per Auth0Sync, cached across calls. Without "
          "manageRouting the tenant is routed beforehand; with it, a new tenant (UPE on, MFA SMS "
          "factor off) is fixed by the operator and restored on remove.")


if __name__ == "__main__":
    asyncio.run(main())
