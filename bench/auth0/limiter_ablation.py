"""Why the per-tenant limiter is fed by Auth0's headers: the same syncs (create + 3 drift checks,
phone-provider) once with the operator's limiter and once with a purely local one at the free
rate (what a fixed-rate limiter such as aiolimiter's leaky bucket does: `observe` ignored):
- on a free tenant (burst 2, 2 requests/s) while another client of the tenant (a person in the
  Dashboard, a CI job) sends one request a second: the 429s each side met;
- on an Enterprise tenant (50 at 50/s) alone: the time taken.

    .venv/bin/python bench/auth0/limiter_ablation.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from otp_operator.auth0 import Auth0Credentials, Auth0Error, Auth0Sync, DesiredIntegration
from otp_operator.auth0.ratelimit import TenantRateLimit
from otp_sandbox.auth0_emulator import ENTERPRISE, FREE, Auth0Emulator, Client, RateLimit
from otp_sandbox.pki import CertificateAuthority

ROUNDS = 4  # create, then three drift checks


def other_client(tenant, person: Client, stop: threading.Event, sent: list[int]) -> None:
    token = httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, json={
        "grant_type": "client_credentials", "client_id": person.client_id,
        "client_secret": person.client_secret, "audience": f"{tenant.base_url}/api/v2/"}).json()["access_token"]
    with httpx.Client(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        while not stop.wait(1.0) and len(sent) < 600:
            sent.append(http.get("/hooks").status_code)


async def run(emu: Auth0Emulator, local_only: bool, plan: RateLimit,
              contended: bool) -> tuple[int, int, int, int, float]:
    operator, person = Client(f"abl-op-{local_only}", "abl-secret-op-xxxxxxxx"), Client(
        f"abl-person-{local_only}", "abl-secret-person-xxxxxxxx")
    tenant = emu.add_tenant(clients=[operator, person], rate_limit=plan)
    tenant.route_phone_messages_to("phone-provider")
    stop, sent, failed = threading.Event(), [], []
    thread = threading.Thread(target=other_client, args=(tenant, person, stop, sent))
    original = TenantRateLimit.observe
    if local_only:
        TenantRateLimit.observe = lambda self, status, headers: None  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        if contended:
            thread.start()
        creds = Auth0Credentials(tenant.domain, operator.client_id, operator.client_secret)
        async with Auth0Sync(creds) as sync:
            recorded = None
            for _ in range(ROUNDS):
                try:
                    result = await sync.ensure(DesiredIntegration(
                        owner="shop/prod", integration="phone-provider", name="otp-relay-shop-prod",
                        relay_url="https://otp.shop.example/prod", signing_key="bench-signing-key-0001"),
                        recorded=recorded)
                    recorded = result.as_status()
                except Auth0Error:
                    failed.append(1)
        elapsed = time.perf_counter() - started
    finally:
        TenantRateLimit.observe = original  # type: ignore[method-assign]
        stop.set()
        if contended:
            thread.join()
    ours = [r for r in tenant.requests() if r.path not in ("/oauth/token", "/api/v2/hooks")]
    tenant.remove()
    return len(ours), sum(r.status == 429 for r in ours), sent.count(429), len(failed), elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority(Path(tmp) / "ca")
        os.environ["SSL_CERT_FILE"] = str(ca.trust_bundle(Path(tmp) / "bundle.pem"))
        emu = Auth0Emulator.start(ca, Path(tmp) / "emu")
        try:
            print("| tenant | limiter | operator requests | operator 429s | other client's 429s | "
                  "syncs failed | wall (s) |")
            print("|---|---|---:|---:|---:|---:|---:|")
            for plan, contended, label in ((FREE, True, "free + another client at 1/s"),
                                           (ENTERPRISE, False, "Enterprise, alone")):
                for local_only in (False, True):
                    requests, limited, theirs, failed, elapsed = await run(emu, local_only, plan, contended)
                    kind = "local only, free rate" if local_only else "fed by x-ratelimit-* (operator)"
                    print(f"| {label} | {kind} | {requests} | {limited} | "
                          f"{theirs if contended else '-'} | {failed} | {elapsed:.1f} |")
        finally:
            emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
