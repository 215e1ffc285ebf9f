"""CPU per Auth0 request on the operator's side, by HTTP transport (prints figures; not a test).

    .venv/bin/python bench/operator/auth0_transport.py [--requests 2000]

The auth0-python SDK sends its requests through an httpx client. This compares, in one run,
CPU per request (a small JSON POST and a 20-item JSON answer over TLS on loopback, 4 at a time,
connections kept) for httpx's own transport (httpcore on anyio), httpx over aiohttp
(httpx-aiohttp, what the operator uses) and aiohttp alone (the floor). The server is a separate
process, so only the client's CPU is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "sandbox"))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
from httpx_aiohttp import AiohttpTransport  # noqa: E402
from otp_sandbox.pki import CertificateAuthority  # noqa: E402

SERVER = """
import asyncio, ssl, sys
async def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    body = b'[' + b','.join([b'{"id":"x","name":"abc","status":"built"}'] * 20) + b']'
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length = 0
                for line in head.split(b"\\r\\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\ncontent-length: %d\\r\\n\\r\\n"
                             % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[3]), ssl=ctx)
    await server.serve_forever()
asyncio.run(main())
"""


async def per_request(send, count: int, concurrency: int = 4) -> float:
    await send()
    started = time.process_time()

    async def worker() -> None:
        for _ in range(count // concurrency):
            await send()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) * 1e6 / count


async def measure(url: str, trust: Path, count: int) -> dict[str, float]:
    ctx = httpx.create_ssl_context(verify=str(trust))
    rows: dict[str, float] = {}
    async with httpx.AsyncClient(verify=ctx) as client:
        rows["httpx, its own transport"] = await per_request(
            lambda: _httpx(client, url), count)
    async with httpx.AsyncClient(transport=AiohttpTransport(verify=ctx)) as client:
        rows["httpx over aiohttp (httpx-aiohttp)"] = await per_request(lambda: _httpx(client, url), count)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        rows["aiohttp alone"] = await per_request(lambda: _aiohttp(session, url), count)
    return rows


async def _httpx(client: httpx.AsyncClient, url: str) -> None:
    (await client.post(url, json={"a": 1}, headers={"authorization": "Bearer x"})).json()


async def _aiohttp(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json={"a": 1}, headers={"authorization": "Bearer x"}) as response:
        await response.json()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-auth0-transport-"))
    ca = CertificateAuthority(work / "ca")
    pair = ca.issue("localhost")
    trust = ca.trust_bundle(work / "trust.pem")
    port = 18000 + (hash(str(work)) % 1000)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(pair.cert), str(pair.key), str(port)],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        lowest: dict[str, float] = {}
        for _ in range(args.rounds):
            for row, value in asyncio.run(measure(f"https://localhost:{port}/x", trust, args.requests)).items():
                lowest[row] = min(value, lowest.get(row, value))
        for row, value in lowest.items():
            print(f"{row:40s} {value:6.0f} µs CPU per request (lowest of {args.rounds} rounds)")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
