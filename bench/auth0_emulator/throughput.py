"""Print the Auth0 emulator's own figures: Management API requests per second (one client, N
concurrent), token issue latency, and phone-message firing latency (one Node.js process each).

    .venv/bin/python bench/auth0_emulator/throughput.py [--requests 400] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from otp_sandbox.auth0_emulator import Auth0Emulator, Client, RateLimit
from otp_sandbox.pki import CertificateAuthority

ACTION = ("exports.onExecuteCustomPhoneProvider = async (event, api) => "
          "{ if (!event.secrets.RELAY_URL) api.notification.drop('no url'); };")


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


async def main(requests: int, concurrency: int, fires: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ca = CertificateAuthority(Path(tmp) / "ca")
        emulator = Auth0Emulator.start(ca, Path(tmp) / "emu")
        try:
            client = Client("bench", "bench-secret")
            tenant = emulator.add_tenant([client], build_seconds=0.0,
                                         rate_limit=RateLimit(1_000_000, 1_000_000))
            verify = ssl.create_default_context(cafile=str(ca.cert_path))
            async with httpx.AsyncClient(base_url=tenant.base_url, verify=verify) as http:
                token_times = []
                for _ in range(20):
                    started = time.perf_counter()
                    answer = await http.post("/oauth/token", data={
                        "grant_type": "client_credentials", "client_id": "bench",
                        "client_secret": "bench-secret",
                        "audience": f"{tenant.base_url}/api/v2/"})
                    token_times.append(time.perf_counter() - started)
                http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
                created = (await http.post("/api/v2/actions/actions", json={
                    "name": "bench", "code": ACTION,
                    "supported_triggers": [{"id": "custom-phone-provider", "version": "v1"}],
                    "secrets": [{"name": "RELAY_URL", "value": "https://r"}]})).json()
                await http.post(f"/api/v2/actions/actions/{created['id']}/deploy")
                await http.post("/api/v2/branding/phone/providers", json={
                    "name": "custom", "configuration": {"delivery_methods": ["text"]}})

                queue = iter(range(requests))
                latencies: list[float] = []

                async def worker() -> None:
                    for _ in queue:
                        started = time.perf_counter()
                        response = await http.get(f"/api/v2/actions/actions/{created['id']}")
                        response.raise_for_status()
                        latencies.append(time.perf_counter() - started)

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
            fire_times = []
            for _ in range(fires):
                result = await tenant.fire_phone_message_async()
                assert result.outcome == "success", result
                fire_times.append(result.duration_ms / 1000)
        finally:
            emulator.stop()
    print(f"token issue ({len(token_times)} sequential): {_ms(token_times)}")
    print(f"GET action, {requests} requests x{concurrency} concurrent: "
          f"{requests / elapsed:.0f} req/s, {_ms(latencies)}")
    print(f"fire_phone_message ({fires} sequential, Node.js per message): {_ms(fire_times)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fires", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.fires))
