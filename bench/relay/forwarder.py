"""A bare forwarder (no checks) for choosing the relay's HTTP stack under the same load: a
server receives each POST and forwards its body to the canned upstream with a client.

    python forwarder.py PORT UPSTREAM_URL CLIENT SERVER
    CLIENT: aiohttp | aiosonic | pyreqwest | httpx
    SERVER: aiohttp | granian (RSGI) | uvicorn (raw ASGI on httptools)

niquests is left out: it installs urllib3-future over urllib3 in the same environment, which
breaks the kubernetes client the operator and its tests use (measured once at ~1,300 µs of
CPU per request on aiohttp's server). Every combination runs on uvloop where the server lets us choose the loop (granian's
``loop="uvloop"``, uvicorn's ``loop="uvloop"``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

Forward = Callable[[bytes], Awaitable[tuple[int, bytes]]]
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench-api-key"}


def make_client(name: str, upstream: str) -> Forward:
    """A forward function; each client is created lazily on the running loop."""
    client = None

    if name == "aiohttp":
        import aiohttp  # noqa: PLC0415

        async def forward(body: bytes) -> tuple[int, bytes]:
            nonlocal client
            if client is None:
                client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100),
                                               auto_decompress=False)
            async with client.post(upstream, data=body, headers=HEADERS, allow_redirects=False) as response:
                return response.status, await response.read()
    elif name == "aiosonic":
        import aiosonic  # noqa: PLC0415

        async def forward(body: bytes) -> tuple[int, bytes]:
            nonlocal client
            if client is None:
                client = aiosonic.HTTPClient(aiosonic.TCPConnector(pool_configs={":default": {"size": 100}}))
            response = await client.post(upstream, data=body, headers=HEADERS, follow=False)
            return response.status_code, await response.content()
    elif name == "pyreqwest":
        from pyreqwest.client import ClientBuilder  # noqa: PLC0415

        async def forward(body: bytes) -> tuple[int, bytes]:
            nonlocal client
            if client is None:
                client = ClientBuilder().max_connections(100).build()
            response = await client.post(upstream).headers(HEADERS).body_bytes(body).build().send()
            return response.status, bytes(await response.bytes())
    elif name == "httpx":
        import httpx  # noqa: PLC0415

        async def forward(body: bytes) -> tuple[int, bytes]:
            nonlocal client
            if client is None:
                client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))
            response = await client.post(upstream, content=body, headers=HEADERS)
            return response.status_code, response.content
    else:
        raise SystemExit(f"unknown client {name!r}")
    return forward


def _forward_from_env() -> Forward:
    return make_client(os.environ["FORWARD_CLIENT"], os.environ["FORWARD_UPSTREAM"])


async def serve_aiohttp(port: int, forward: Forward) -> None:
    from aiohttp import web  # noqa: PLC0415

    async def handle(request: web.Request) -> web.Response:
        status, body = await forward(await request.read())
        return web.Response(status=202 if status == 200 else 502, body=body,
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


_rsgi_forward: Forward | None = None


async def rsgi_app(scope, protocol) -> None:  # noqa: ANN001  granian's RSGI interface
    global _rsgi_forward
    if _rsgi_forward is None:
        _rsgi_forward = _forward_from_env()
    status, body = await _rsgi_forward(await protocol())
    protocol.response_bytes(202 if status == 200 else 502, [("content-type", "application/json")], body)


_asgi_forward: Forward | None = None
_ASGI_HEADERS = [(b"content-type", b"application/json")]


async def asgi_app(scope, receive, send) -> None:  # noqa: ANN001  raw ASGI, no framework
    global _asgi_forward
    if _asgi_forward is None:
        _asgi_forward = _forward_from_env()
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, answer = await _asgi_forward(body)
    await send({"type": "http.response.start", "status": 202 if status == 200 else 502,
                "headers": _ASGI_HEADERS})
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    port, upstream, client_name, server_name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    os.environ.update(FORWARD_CLIENT=client_name, FORWARD_UPSTREAM=upstream)
    if server_name == "granian":
        from granian import Granian  # noqa: PLC0415

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        Granian("forwarder:rsgi_app", address="127.0.0.1", port=port, interface="rsgi", workers=1,
                loop="uvloop", log_enabled=False).serve()
    elif server_name == "uvicorn":
        import uvicorn  # noqa: PLC0415

        uvicorn.run(asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                    lifespan="off", log_level="warning", access_log=False)
    else:
        import uvloop  # noqa: PLC0415

        uvloop.run(serve_aiohttp(port, make_client(client_name, upstream)))


if __name__ == "__main__":
    main()
