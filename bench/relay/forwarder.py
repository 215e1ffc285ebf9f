"""A bare forwarder (no checks) to show the relay's library choices under the same load:
the server (aiohttp's, or Starlette on uvicorn with uvloop + httptools) forwarding each POST
with aiohttp's ClientSession or httpx's AsyncClient.

    python forwarder.py PORT UPSTREAM_URL aiohttp|httpx aiohttp|starlette
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop
from aiohttp import web

Forward = Callable[[bytes], Awaitable[tuple[int, bytes]]]


def make_client(name: str, upstream: str) -> Forward:
    headers = {"Content-Type": "application/json"}
    if name == "aiohttp":
        session: aiohttp.ClientSession | None = None

        async def forward(body: bytes) -> tuple[int, bytes]:
            nonlocal session
            if session is None:  # created on the running loop
                session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            async with session.post(upstream, data=body, headers=headers) as response:
                return response.status, await response.read()
        return forward
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))

    async def forward(body: bytes) -> tuple[int, bytes]:
        response = await client.post(upstream, content=body, headers=headers)
        return response.status_code, response.content
    return forward


async def serve_aiohttp(port: int, forward: Forward) -> None:
    async def handle(request: web.Request) -> web.Response:
        status, body = await forward(await request.read())
        return web.Response(status=202 if status == 200 else 502, body=body)

    app = web.Application()
    app.router.add_post("/v1/messages", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def serve_starlette(port: int, forward: Forward) -> None:
    import uvicorn  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    async def handle(request: Request) -> Response:
        status, body = await forward(await request.body())
        return Response(body, status_code=202 if status == 200 else 502)

    app = Starlette(routes=[Route("/v1/messages", handle, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    port, upstream, client_name, server_name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    forward = make_client(client_name, upstream)
    if server_name == "starlette":
        serve_starlette(port, forward)
    else:
        uvloop.run(serve_aiohttp(port, forward))
