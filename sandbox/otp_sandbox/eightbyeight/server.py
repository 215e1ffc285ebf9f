"""The 8x8 SMS API emulator: a real HTTPS server speaking 8x8's documented contract.

8x8 paths: ``POST /api/v1/subaccounts/{id}/messages`` and ``.../messages/batch``.
The admin API for tests lives under ``/__sandbox/`` (subaccounts and their API keys, the
record of every message and request, fault injection, destinations that 8x8 rejects).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import struct
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from . import rules

QUEUED = {"code": "QUEUED", "description": "SMS is accepted and queued for processing"}
REJECTED = {"code": "REJECTED", "description": "Destination is blocked"}


@dataclass
class Fault:
    """One injected fault. ``count`` None means until cleared."""

    kind: str  # latency | status | reset
    count: int | None = 1
    ms: int = 0
    status: int = 500
    retry_after: int | None = None
    code: int | None = None
    after_accept: bool = False  # reset: record the message as accepted, then drop the connection

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Fault":
        fault = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if fault.kind not in {"latency", "status", "reset"}:
            raise ValueError(f"unknown fault kind {fault.kind!r}: use latency, status or reset")
        return fault


@dataclass
class State:
    api_keys: dict[str, set[str]] = field(default_factory=dict)  # subaccount -> keys
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    rejected_destinations: set[str] = field(default_factory=set)

    def take_faults(self) -> tuple[int, Fault | None]:
        """Total injected latency (ms) and the terminating fault for one request, consuming
        their counts."""
        latency, terminal = 0, None
        for fault in self.faults:
            if fault.kind == "latency":
                latency += fault.ms
            elif terminal is None:
                terminal = fault
            else:
                continue
            if fault.count is not None:
                fault.count -= 1
        self.faults = [f for f in self.faults if f.count is None or f.count > 0]
        return latency, terminal


STATE = web.AppKey("state", State)


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "errorId": str(uuid.uuid4()),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
    }
    return web.json_response(body, status=status, headers=headers)


def _reset(request: web.Request) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _authorize(state: State, request: web.Request, subaccount: str) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return _error(401, rules.UNAUTHORIZED, "Unauthorized")
    owners = [sub for sub, keys in state.api_keys.items() if key in keys]
    if not owners:
        return _error(401, rules.UNAUTHORIZED, "Unauthorized")
    if subaccount not in owners:
        return _error(403, rules.FORBIDDEN, "Forbidden: the API key has no access to this subaccount")
    return None


def _accept(state: State, subaccount: str, message: dict[str, Any], batch_id: str | None) -> dict[str, Any]:
    destination = message["destination"].lstrip("+")
    rejected = destination in state.rejected_destinations
    record = {
        "umid": str(uuid.uuid4()),
        "subaccount": subaccount,
        "destination": destination,
        "text": message["text"],
        "source": message.get("source"),
        "encoding": message.get("encoding", "AUTO"),
        "clientMessageId": message.get("clientMessageId"),
        "clientIp": message.get("clientIp"),
        "country": message.get("country"),
        "batchId": batch_id,
        "status": dict(REJECTED if rejected else QUEUED),
    }
    state.messages.append(record)
    return record


async def _send(request: web.Request, batch: bool) -> web.StreamResponse:
    state = request.app[STATE]
    subaccount = request.match_info["subaccount"]
    entry = {"path": request.path, "status": None, "clientMessageId": None}
    state.requests.append(entry)
    latency, fault = state.take_faults()
    if latency:
        await asyncio.sleep(latency / 1000)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        entry["clientMessageId"] = body.get("clientMessageId") or body.get("clientBatchId")
    if fault is not None and fault.kind == "status":
        entry["status"] = fault.status
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        code = fault.code if fault.code is not None else (rules.INTERNAL if fault.status >= 500 else fault.status)
        return _error(fault.status, code, "Injected fault", headers)
    if fault is not None and fault.kind == "reset" and not fault.after_accept:
        entry["status"] = "reset"
        _reset(request)
        return web.Response()
    response = _handle_send(state, request, subaccount, body, batch)
    entry["status"] = response.status
    if fault is not None and fault.kind == "reset":
        entry["status"] = "reset"
        _reset(request)
    return response


def _handle_send(state: State, request: web.Request, subaccount: str, body: Any, batch: bool) -> web.Response:
    if not rules.SUBACCOUNT_ID.match(subaccount):
        return _error(400, rules.ILLEGAL_SUBACCOUNT, "Illegal subaccount")
    denied = _authorize(state, request, subaccount)
    if denied is not None:
        return denied
    if body is None:
        return _error(400, rules.INVALID_REQUEST, "Request body must be JSON")
    if not batch:
        invalid = rules.check_message(body)
        if invalid is not None:
            return _error(invalid.status, invalid.code, invalid.message)
        record = _accept(state, subaccount, body, None)
        return web.json_response({
            "umid": record["umid"],
            "clientMessageId": record["clientMessageId"],
            "destination": record["destination"],
            "encoding": record["encoding"],
            "status": record["status"],
        })
    items = rules.batch_messages(body)
    if isinstance(items, rules.Invalid):
        return _error(items.status, items.code, items.message)
    batch_id = str(uuid.uuid4())
    answers: list[dict[str, Any]] = []
    accepted = rejected = 0
    for item in items:
        invalid = rules.check_message(item)
        if invalid is not None:
            rejected += 1
            destination = item.get("destination") if isinstance(item, dict) else None
            answers.append({"umid": None, "destination": destination,
                            "status": {"code": "REJECTED", "description": invalid.message}})
            continue
        record = _accept(state, subaccount, item, batch_id)
        if record["status"]["code"] == "REJECTED":
            rejected += 1
        else:
            accepted += 1
        answers.append({key: record[key] for key in ("umid", "clientMessageId", "destination", "encoding", "status")})
    answer: dict[str, Any] = {
        "batchId": batch_id,
        "clientBatchId": body.get("clientBatchId"),
        "acceptedCount": accepted,
        "rejectedCount": rejected,
    }
    if body.get("includeMessagesInResponse"):
        answer["messages"] = answers
    return web.json_response(answer)


async def send_one(request: web.Request) -> web.StreamResponse:
    return await _send(request, batch=False)


async def send_batch(request: web.Request) -> web.StreamResponse:
    return await _send(request, batch=True)


# --- admin API (/__sandbox/) -------------------------------------------------------------

async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


async def add_subaccount(request: web.Request) -> web.Response:
    data = await _json(request)
    sub, key = data.get("id"), data.get("api_key")
    if not isinstance(sub, str) or not isinstance(key, str) or not key:
        raise web.HTTPBadRequest(text="need 'id' and 'api_key' strings")
    request.app[STATE].api_keys.setdefault(sub, set()).add(key)
    return web.json_response({"id": sub})


async def revoke_key(request: web.Request) -> web.Response:
    data = await _json(request)
    request.app[STATE].api_keys.get(request.match_info["subaccount"], set()).discard(data.get("api_key", ""))
    return web.json_response({})


async def list_messages(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].messages)


async def list_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].requests)


async def clear(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.messages.clear()
    state.requests.clear()
    state.faults.clear()
    state.rejected_destinations.clear()
    return web.json_response({})


async def add_fault(request: web.Request) -> web.Response:
    try:
        fault = Fault.from_json(await _json(request))
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request.app[STATE].faults.append(fault)
    return web.json_response(asdict(fault))


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.json_response({})


async def reject_destination(request: web.Request) -> web.Response:
    data = await _json(request)
    destination = str(data.get("destination", "")).lstrip("+")
    request.app[STATE].rejected_destinations.add(destination)
    return web.json_response({"destination": destination})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = State()
    app.router.add_post("/api/v1/subaccounts/{subaccount}/messages", send_one)
    app.router.add_post("/api/v1/subaccounts/{subaccount}/messages/batch", send_batch)
    app.router.add_get("/__sandbox/health", health)
    app.router.add_post("/__sandbox/subaccounts", add_subaccount)
    app.router.add_post("/__sandbox/subaccounts/{subaccount}/revoke", revoke_key)
    app.router.add_get("/__sandbox/messages", list_messages)
    app.router.add_get("/__sandbox/requests", list_requests)
    app.router.add_post("/__sandbox/clear", clear)
    app.router.add_post("/__sandbox/faults", add_fault)
    app.router.add_delete("/__sandbox/faults", clear_faults)
    app.router.add_post("/__sandbox/rejections", reject_destination)
    return app


async def serve(host: str, port: int, cert: str, key: str, announce) -> None:
    """Serve until cancelled; ``announce(url)`` is called once the socket listens."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=5)
    await runner.setup()
    sock = socket.create_server((host, port))
    site = web.SockSite(runner, sock, ssl_context=context)
    await site.start()
    bound = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    announce(f"https://{shown_host}:{bound}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
