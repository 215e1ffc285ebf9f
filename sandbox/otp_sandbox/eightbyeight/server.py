"""The 8x8 SMS API emulator: a real HTTPS server speaking 8x8's documented contract.

8x8 paths: ``POST /api/v1/subaccounts/{id}/messages`` and ``.../messages/batch``, checked
against 8x8's OpenAPI file (see ``rules``); delivery receipts to ``dlrCallbackUrl`` (see
``receipts``). The admin API for tests lives under ``/__sandbox/`` (subaccounts and their API
keys, the record of every message, request and receipt attempt, fault injection, destinations
that 8x8 rejects, per-destination delivery outcomes).
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
from .receipts import Dispatcher, Outcome, time_factor

QUEUED = {"code": "QUEUED", "description": "SMS is accepted and queued for processing"}
REJECTED = {"code": "REJECTED", "description": "Destination is blocked"}
JSON = "application/json"


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
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # destination digits -> outcome

    def reset(self) -> None:
        """Forget everything but the subaccounts and their keys."""
        for collection in (self.messages, self.requests, self.faults, self.rejected_destinations,
                           self.outcomes):
            collection.clear()

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
RECEIPTS = web.AppKey("receipts", Dispatcher)


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
    if subaccount not in owners:  # authenticated, but not for this subaccount: 8x8's 1001
        return _error(400, rules.ILLEGAL_SUBACCOUNT, "Provided subAccountId doesn't belong to your account")
    return None


def _accept(request: web.Request, subaccount: str, message: rules.Message,
            batch: dict[str, str] | None = None) -> dict[str, Any]:
    """Record an accepted message (QUEUED, or REJECTED for a blocked destination) and
    schedule its delivery receipt."""
    state = request.app[STATE]
    rejected = message.destination in state.rejected_destinations
    record = {
        "umid": str(uuid.uuid4()),
        "subaccount": subaccount,
        "destination": message.destination,
        "text": message.text,
        "source": message.source,
        "encoding": message.encoding,
        "smsCount": message.sms_count,
        "clientMessageId": message.client_message_id,
        "clientIp": message.client_ip,
        "country": message.country,
        "dlrCallbackUrl": message.dlr_callback_url,
        "expiry": message.expiry,
        **(batch or {}),
        "status": dict(REJECTED if rejected else QUEUED),
    }
    state.messages.append(record)
    if not rejected:
        request.app[RECEIPTS].schedule(record, state.outcomes.get(message.destination, Outcome()))
    return record


def _answer(record: dict[str, Any]) -> dict[str, Any]:
    """8x8's SmsResponse for a recorded message (absent clientMessageId left out)."""
    answer = {"umid": record["umid"]}
    if record.get("clientMessageId") is not None:
        answer["clientMessageId"] = record["clientMessageId"]
    answer.update({key: record[key] for key in ("destination", "encoding", "status")})
    return answer


def _rejected_answer(item: dict[str, Any], invalid: rules.Invalid) -> dict[str, Any]:
    """A batch message refused on its own: REJECTED with the reason, never recorded."""
    text = item.get("text") if isinstance(item.get("text"), str) else ""
    return _answer({
        "umid": str(uuid.uuid4()),
        "clientMessageId": item.get("clientMessageId"),
        "destination": item.get("destination", ""),
        "encoding": rules.detect_encoding(text, item.get("encoding", "AUTO")),
        "status": {"code": "REJECTED", "description": invalid.message},
    })


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
        return _fault_error(fault)
    if fault is not None and fault.kind == "reset" and not fault.after_accept:
        entry["status"] = "reset"
        _reset(request)
        return web.Response()
    response = _handle_send(request, subaccount, body, batch)
    entry["status"] = response.status
    if fault is not None and fault.kind == "reset":
        entry["status"] = "reset"
        _reset(request)
    return response


def _fault_error(fault: Fault) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    if fault.status == 429:
        code = 429
        message = f"Quota exceeded. Please try again in {fault.retry_after or 1} second(s)."
    elif fault.status >= 500:
        code, message = rules.INTERNAL, "Internal server error"
    else:
        code, message = fault.status, "Injected fault"
    return _error(fault.status, fault.code if fault.code is not None else code, message, headers)


def _handle_send(request: web.Request, subaccount: str, body: Any, batch: bool) -> web.Response:
    if not rules.SUBACCOUNT_ID.match(subaccount):
        return _error(400, rules.ILLEGAL_SUBACCOUNT, "Illegal SubAccountId")
    denied = _authorize(request.app[STATE], request, subaccount)
    if denied is not None:
        return denied
    if request.content_type != JSON:  # the spec documents application/json bodies only
        return _error(400, rules.INVALID_PARAMETER, f"Unsupported content type: send {JSON}")
    if body is None:
        return _error(400, rules.INVALID_PARAMETER, "Request body must be JSON")
    return _send_batch(request, subaccount, body) if batch else _send_single(request, subaccount, body)


def tls_version(request: web.Request) -> str | None:
    """The TLS version the request came over ("TLSv1.2", "TLSv1.3"), None without TLS."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object.version() if ssl_object is not None else None


def _insecure(request: web.Request, messages: list[rules.Message]) -> web.Response | None:
    """8x8's 426 when a destination needs a newer TLS version than the request used."""
    problem = rules.insecure_protocol([m.destination for m in messages], tls_version(request))
    if problem is None:
        return None
    return _error(426, problem.code, problem.message, headers={"Upgrade": "TLS/1.3"})


def _send_single(request: web.Request, subaccount: str, body: Any) -> web.Response:
    message = rules.check_message(body)
    if isinstance(message, rules.Invalid):
        return _error(400, message.code, message.message)
    insecure = _insecure(request, [message])
    if insecure is not None:
        return insecure
    return web.json_response(_answer(_accept(request, subaccount, message)))


def _send_batch(request: web.Request, subaccount: str, body: Any) -> web.Response:
    items = rules.batch_messages(body)
    if isinstance(items, rules.Invalid):
        return _error(400, items.code, items.message)
    checked = [rules.check_message(item, batch=True) for item in items]
    for result in checked:  # a request-level problem anywhere fails the whole batch
        if isinstance(result, rules.Invalid) and not result.per_message:
            return _error(400, result.code, result.message)
    insecure = _insecure(request, [m for m in checked if isinstance(m, rules.Message)])
    if insecure is not None:
        return insecure
    batch = {"batchId": str(uuid.uuid4())}
    if body.get("clientBatchId") is not None:
        batch["clientBatchId"] = body["clientBatchId"]
    answers = [_rejected_answer(item, result) if isinstance(result, rules.Invalid)
               else _answer(_accept(request, subaccount, result, batch))
               for item, result in zip(items, checked)]
    accepted = sum(1 for a in answers if a["status"]["code"] == "QUEUED")
    answer: dict[str, Any] = {**batch, "acceptedCount": accepted, "rejectedCount": len(answers) - accepted}
    if body.get("includeMessagesInResponse") is True:
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
    request.app[STATE].reset()
    request.app[RECEIPTS].clear()
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


async def set_outcome(request: web.Request) -> web.Response:
    data = await _json(request)
    destination = rules.e164(str(data.get("destination", "")), None)
    if destination is None:
        raise web.HTTPBadRequest(text="need 'destination', a valid international number")
    try:
        outcome = Outcome.from_json(data)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request.app[STATE].outcomes[destination] = outcome
    return web.json_response({"destination": destination, **asdict(outcome)})


async def list_receipts(request: web.Request) -> web.Response:
    receipts = request.app[RECEIPTS]
    return web.json_response({"pending": receipts.pending, "time_factor": receipts.time_factor,
                              "attempts": receipts.attempts})


async def receipt_settings(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        factor = time_factor(data.get("time_factor"))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request.app[RECEIPTS].time_factor = factor
    return web.json_response({"time_factor": factor})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(receipts: Dispatcher) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = State()
    app[RECEIPTS] = receipts
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
    app.router.add_post("/__sandbox/outcomes", set_outcome)
    app.router.add_get("/__sandbox/receipts", list_receipts)
    app.router.add_post("/__sandbox/receipts/settings", receipt_settings)
    return app


async def serve(host: str, port: int, cert: str, key: str, announce, receipts: Dispatcher) -> None:
    """Serve until cancelled; ``announce(url)`` is called once the socket listens."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # older: refused at the handshake (rules)
    context.load_cert_chain(cert, key)
    app = make_app(receipts)
    app.on_cleanup.append(lambda _app: receipts.close())
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
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
