"""The 8x8 emulator: a real HTTPS server speaking 8x8's documented SMS and Voice contracts.

SMS paths: ``POST /api/v1/subaccounts/{id}/messages`` and ``.../messages/batch``, checked
against 8x8's OpenAPI file (see ``rules``); delivery receipts to ``dlrCallbackUrl`` (see
``receipts``). Voice paths (8x8 serves them from ``voice.8x8.com``; the emulator from the same
address): ``POST .../callflows`` (see ``callflows``), the Webhooks API ``.../webhooks`` and
``GET .../speech-profiles``; session summaries to the subaccount's VSS webhook (see
``sessions``). The admin API for tests lives under ``/__sandbox/`` (subaccounts, their API keys
and whitelisted caller IDs, the record of every message, call, request and webhook attempt,
fault injection, destinations that 8x8 rejects, per-destination delivery and call outcomes).
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

from . import callflows, feedback, rules
from .receipts import Dispatcher, Outcome, time_factor
from .sessions import NO_SUMMARY, VoiceOutcome, session_seconds, session_summary

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
    api: str | None = None  # "sms" or "voice": only requests to that API; None: any

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Fault":
        fault = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        if fault.kind not in {"latency", "status", "reset"}:
            raise ValueError(f"unknown fault kind {fault.kind!r}: use latency, status or reset")
        if fault.api not in (None, "sms", "voice", "webhooks"):
            raise ValueError(f"unknown fault api {fault.api!r}: use sms, voice, webhooks or none for "
                             "the sends of both")
        return fault


@dataclass
class State:
    api_keys: dict[str, set[str]] = field(default_factory=dict)  # subaccount -> keys
    messages: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    rejected_destinations: set[str] = field(default_factory=set)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # destination digits -> outcome
    caller_ids: dict[str, list[str]] = field(default_factory=dict)  # subaccount -> E.164 digits
    calls: list[dict[str, Any]] = field(default_factory=list)
    call_outcomes: dict[str, VoiceOutcome] = field(default_factory=dict)  # destination digits -> outcome
    voice_webhooks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # sub -> type -> hook
    webhook_requests: list[dict[str, Any]] = field(default_factory=list)  # Webhooks API requests
    speech_profiles: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    tracking_subaccounts: set[str] = field(default_factory=set)  # track conversion without `track`
    feedback: list[dict[str, Any]] = field(default_factory=list)  # accepted conversion feedback
    clock_offset: float = 0.0  # seconds added to the wall clock (the feedback window, acceptedAt)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.clock_offset)

    def __post_init__(self) -> None:
        self.speech_profiles.update((p[0], p) for p in callflows.SPEECH_PROFILES)

    def reset(self) -> None:
        """Forget everything but the subaccounts, their keys and their caller IDs (voice
        webhooks too: a test configures its own); back to the documented speech profiles."""
        for collection in (self.messages, self.requests, self.faults, self.rejected_destinations,
                           self.outcomes, self.calls, self.call_outcomes, self.voice_webhooks,
                           self.webhook_requests, self.speech_profiles, self.tracking_subaccounts,
                           self.feedback):
            collection.clear()
        self.clock_offset = 0.0
        self.__post_init__()

    def take_faults(self, api: str) -> tuple[int, Fault | None]:
        """Total injected latency (ms) and the terminating fault for one request to ``api``,
        consuming their counts. Webhooks API requests take only faults aimed at "webhooks"
        (a fault for any API stays the sends' own)."""
        latency, terminal = 0, None
        for fault in self.faults:
            if fault.api not in ((api,) if api == "webhooks" else (None, api)):
                continue
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


UNAUTHENTICATED, OTHER_SUBACCOUNT = "unauthenticated", "other subaccount"


def _key_problem(state: State, request: web.Request, subaccount: str) -> str | None:
    """Why the request's ``Authorization: Bearer`` key may not use ``subaccount``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return UNAUTHENTICATED
    owners = [sub for sub, keys in state.api_keys.items() if key in keys]
    if not owners:
        return UNAUTHENTICATED
    return None if subaccount in owners else OTHER_SUBACCOUNT


def _authorize(state: State, request: web.Request, subaccount: str) -> web.Response | None:
    problem = _key_problem(state, request, subaccount)
    if problem == UNAUTHENTICATED:
        return _error(401, rules.UNAUTHORIZED, "Unauthorized")
    if problem == OTHER_SUBACCOUNT:  # authenticated, but not for this subaccount: 8x8's 1001
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
        "track": message.track,
        "tracked": feedback.tracked(message.track, subaccount in state.tracking_subaccounts),
        "acceptedAt": state.now().isoformat(timespec="milliseconds"),
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
    raw = item.get("text")
    text = raw if isinstance(raw, str) else ""
    return _answer({
        "umid": str(uuid.uuid4()),
        "clientMessageId": item.get("clientMessageId"),
        "destination": item.get("destination", ""),
        "encoding": rules.detect_encoding(text, str(item.get("encoding") or "AUTO")),
        "status": {"code": "REJECTED", "description": invalid.message},
    })


async def _serve(request: web.Request, api: str, handle, fault_error, reference: str) -> web.StreamResponse:
    """One request to an 8x8 path of ``api``, with the injected faults: recorded in
    ``requests`` with its ``reference`` field (the body's client reference), answered by
    ``handle(request, subaccount, body)`` or, for a status fault, ``fault_error(fault)``."""
    state = request.app[STATE]
    subaccount = request.match_info["subaccount"]
    entry: dict[str, Any] = {"path": request.path, "status": None, "clientMessageId": None}
    state.requests.append(entry)
    latency, fault = state.take_faults(api)
    if latency:
        await asyncio.sleep(latency / 1000)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        entry[reference] = body.get(reference) or body.get("clientBatchId")
    if fault is not None and fault.kind == "status":
        entry["status"] = fault.status
        return fault_error(fault)
    if fault is not None and fault.kind == "reset" and not fault.after_accept:
        entry["status"] = "reset"
        _reset(request)
        return web.Response()
    response = handle(request, subaccount, body)
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
    return await _serve(request, "sms", lambda r, sub, body: _handle_send(r, sub, body, False),
                        _fault_error, "clientMessageId")


async def send_batch(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "sms", lambda r, sub, body: _handle_send(r, sub, body, True),
                        _fault_error, "clientMessageId")


def _handle_feedback(request: web.Request, subaccount: str, body: Any) -> web.Response:
    """``POST .../messages/{umid}/feedback`` (see ``feedback`` for the rules and the choices)."""
    if not rules.SUBACCOUNT_ID.match(subaccount):
        return _error(400, rules.ILLEGAL_SUBACCOUNT, "Illegal SubAccountId")
    state = request.app[STATE]
    denied = _authorize(state, request, subaccount)
    if denied is not None:
        return denied
    umid = request.match_info["umid"]
    if not feedback.UUID.match(umid):
        return _error(400, feedback.INVALID_PARAMETER, feedback.INVALID_UMID)
    record = next((m for m in state.messages if m["umid"] == umid and m["subaccount"] == subaccount), None)
    if record is None:
        return _error(404, feedback.NOT_FOUND, feedback.MESSAGE_NOT_FOUND)
    if request.content_type != JSON:
        return _error(400, rules.INVALID_PARAMETER, f"Unsupported content type: send {JSON}")
    now = state.now()
    given = feedback.check_body(body, dt.datetime.fromisoformat(record["acceptedAt"]), now)
    if isinstance(given, feedback.Refused):
        return _error(given.status, given.code, given.message)
    refused = feedback.check_message(record, now, any(f["umid"] == umid for f in state.feedback))
    if refused is not None:
        return _error(refused.status, refused.code, refused.message)
    sent = dt.datetime.fromisoformat(record["acceptedAt"])
    state.feedback.append({"umid": umid, "subaccount": subaccount, "outcome": given.outcome,
                           "timestamp": given.timestamp, "receivedAt": now.isoformat(timespec="milliseconds"),
                           "afterSeconds": round((now - sent).total_seconds(), 3),
                           "destination": record["destination"], "clientMessageId": record["clientMessageId"]})
    return web.Response(status=200)  # "it is normal for the HTTP 200 response to have no content"


async def send_feedback(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "sms", _handle_feedback, _fault_error, "clientMessageId")


# --- Voice API ---------------------------------------------------------------------------

def _voice_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """8x8's CallflowErrorResponse."""
    return web.json_response({"sessionStatus": callflows.NOT_CREATED, "callFlowRequestId": str(uuid.uuid1()),
                              "statusCode": code, "statusMessage": message}, status=status, headers=headers)


def _voice_fault_error(fault: Fault) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    message = {429: "Too many requests", 500: "Internal server error"}.get(fault.status, "Injected fault")
    return _voice_error(fault.status, fault.code if fault.code is not None else fault.status, message, headers)


def _voice_denied(request: web.Request, subaccount: str) -> web.Response | None:
    """401 without a valid key; 404 (8x8's "SubAccount not found") for a subaccount the key
    does not own or an illegal id (8x8's example; the emulator's guess for the latter two)."""
    problem = None if rules.SUBACCOUNT_ID.match(subaccount) else OTHER_SUBACCOUNT
    problem = problem or _key_problem(request.app[STATE], request, subaccount)
    if problem == UNAUTHENTICATED:
        return _voice_error(401, 401, "Authentication header not found or token invalid")
    if problem == OTHER_SUBACCOUNT:
        return _voice_error(404, 404, f"SubAccount not found by Id : {subaccount}")
    return None


def _handle_callflow(request: web.Request, subaccount: str, body: Any) -> web.Response:
    denied = _voice_denied(request, subaccount)
    if denied is not None:
        return denied
    state = request.app[STATE]
    if request.content_type != JSON or body is None:
        refused = callflows.Refused(callflows.INVALID_JSON)
        return _voice_error(refused.http_status, refused.code, refused.message)
    flow = callflows.check_callflow(body, set(state.caller_ids.get(subaccount, ())), set(state.speech_profiles))
    if isinstance(flow, callflows.Refused):
        return _voice_error(flow.http_status, flow.code, flow.message)
    call = _place(request, subaccount, flow)
    answer = {"sessionId": call["sessionId"], "sessionStatus": callflows.CREATED,
              "callFlowRequestId": call["callFlowRequestId"]}
    if flow.valid_until is not None:
        answer["validUntil"] = flow.valid_until
    answer.update({"statusCode": callflows.OK_CODE, "statusMessage": callflows.OK_MESSAGE})
    return web.json_response(answer)


def _place(request: web.Request, subaccount: str, flow: callflows.Callflow) -> dict[str, Any]:
    """Record a created session and schedule its summary to the subaccount's VSS webhook."""
    state = request.app[STATE]
    outcome = state.call_outcomes.get(flow.destination, VoiceOutcome())
    says = [{"text": s.text, "voiceProfile": s.voice_profile, "repetition": s.repetition, "speed": s.speed}
            for s in flow.says]
    first = says[0] if says else {}
    call: dict[str, Any] = {
        "sessionId": str(uuid.uuid4()), "callFlowRequestId": str(uuid.uuid1()), "callId": str(uuid.uuid1()),
        "subaccount": subaccount, "source": flow.source, "destination": flow.destination,
        "text": first.get("text"), "voiceProfile": first.get("voiceProfile"),
        "repetition": first.get("repetition"), "speed": first.get("speed"), "says": says,
        "actions": list(flow.actions), "validUntil": flow.valid_until, "clientActionId": flow.client_action_id,
        "sourceRefId": f"PSTN{state.caller_ids[subaccount].index(flow.source) + 1}",
        "lastAction": flow.last_action, "status": callflows.CREATED,
    }
    call["outcome"] = {**asdict(outcome), "duration_s": outcome.duration(call),
                       "sip_code": outcome.final_sip_code() if outcome.kind != NO_SUMMARY else None}
    state.calls.append(call)
    hook = state.voice_webhooks.get(subaccount, {}).get("VSS")
    if hook is not None and hook["enabled"] and outcome.kind != NO_SUMMARY:
        dispatcher = request.app[RECEIPTS]
        started = dt.datetime.now(dt.timezone.utc)
        ringing, connected = session_seconds(call, outcome)
        headers = {"Authorization": hook["httpAuthHeader"]} if hook.get("httpAuthHeader") else None
        dispatcher.post_later(hook["url"], {"sessionId": call["sessionId"]},
                              ringing + connected * dispatcher.time_factor,
                              lambda: session_summary(call, outcome, started), headers)
    return call


async def place_callflow(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "voice", _handle_callflow, _voice_fault_error, "clientActionId")


WEBHOOK_TYPES = ("VCS", "VCA", "VSS", "VRU", "VNU")


def _webhook_error(status: int, code: str, message: str) -> web.Response:
    """The Webhooks API's error body (its 422 schema; 8x8 documents no body for the others)."""
    return web.json_response({"errorId": str(uuid.uuid4()), "statusCode": code, "statusMessage": message,
                              "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")},
                             status=status)


def _webhook_denied(request: web.Request, subaccount: str) -> web.Response | None:
    problem = None if rules.SUBACCOUNT_ID.match(subaccount) else OTHER_SUBACCOUNT
    problem = problem or _key_problem(request.app[STATE], request, subaccount)
    if problem == UNAUTHENTICATED:
        return _webhook_error(401, "401", "API key not found or invalid")
    if problem == OTHER_SUBACCOUNT:
        return _webhook_error(404, "404", "Resource not found")
    return None


def _public_hook(hook: dict[str, Any]) -> dict[str, Any]:
    return {"type": hook["type"], "url": hook["url"], "enabled": hook["enabled"],
            "httpAuthHeaderAvailable": bool(hook.get("httpAuthHeader"))}


def _hooks_answer(state: State, subaccount: str) -> web.Response:
    hooks = [_public_hook(h) for h in state.voice_webhooks.get(subaccount, {}).values()]
    return web.json_response({"subAccountId": subaccount, "count": len(hooks), "webhooks": hooks,
                              "statusCode": 0, "statusMessage": "ok"})


def store_webhook(state: State, subaccount: str, data: Any) -> str | None:
    """Create or replace a subaccount's voice webhook of ``data["type"]``; why not, or None."""
    if not isinstance(data, dict):
        return "Invalid JSON request body"
    kind, url = data.get("type"), data.get("url")
    if kind not in WEBHOOK_TYPES:
        return f"type must be one of {', '.join(WEBHOOK_TYPES)}"
    if not isinstance(url, str) or not rules.valid_callback_url(url):
        return "url must be an http or https URL"
    header, enabled = data.get("httpAuthHeader"), data.get("enabled", True)
    if header is not None and not isinstance(header, str):
        return "httpAuthHeader must be a string"
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        return "enabled must be a boolean"
    state.voice_webhooks.setdefault(subaccount, {})[kind] = {"type": kind, "url": url, "httpAuthHeader": header,
                                                             "enabled": enabled}
    return None


async def _webhooks_call(request: web.Request, handle) -> web.Response:
    """One Webhooks API request: recorded in ``webhook_requests`` (method, path, the body's
    type and url for a POST, status), with the faults injected for api "webhooks"."""
    state = request.app[STATE]
    entry: dict[str, Any] = {"method": request.method, "path": request.path, "status": None}
    state.webhook_requests.append(entry)
    latency, fault = state.take_faults("webhooks")
    if latency:
        await asyncio.sleep(latency / 1000)
    if fault is not None and fault.kind == "status":
        entry["status"] = fault.status
        return _webhook_error(fault.status, str(fault.status), "Injected fault")
    if fault is not None and fault.kind == "reset":
        entry["status"] = "reset"
        _reset(request)
        return web.Response()
    response = await handle(request, entry)
    entry["status"] = response.status
    return response


async def create_webhook(request: web.Request) -> web.Response:
    return await _webhooks_call(request, _create_webhook)


async def list_webhooks(request: web.Request) -> web.Response:
    return await _webhooks_call(request, _list_webhooks)


async def delete_webhook(request: web.Request) -> web.Response:
    return await _webhooks_call(request, _delete_webhook)


async def _create_webhook(request: web.Request, entry: dict[str, Any]) -> web.Response:
    subaccount = request.match_info["subaccount"]
    denied = _webhook_denied(request, subaccount)
    if denied is not None:
        return denied
    try:
        data = json.loads(await request.read())
    except ValueError:
        data = None
    if isinstance(data, dict):
        entry.update(type=data.get("type"), url=data.get("url"))
    problem = store_webhook(request.app[STATE], subaccount, data)
    if problem is not None:
        return _webhook_error(422, "1001", problem)
    return _hooks_answer(request.app[STATE], subaccount)


async def _list_webhooks(request: web.Request, entry: dict[str, Any]) -> web.Response:
    subaccount = request.match_info["subaccount"]
    return _webhook_denied(request, subaccount) or _hooks_answer(request.app[STATE], subaccount)


async def _delete_webhook(request: web.Request, entry: dict[str, Any]) -> web.Response:
    subaccount = request.match_info["subaccount"]
    denied = _webhook_denied(request, subaccount)
    if denied is not None:
        return denied
    hook = request.app[STATE].voice_webhooks.get(subaccount, {}).pop(request.match_info["type"], None)
    if hook is None:
        return _webhook_error(404, "404", "Resource not found")
    return web.json_response({"subAccountId": subaccount, **_public_hook(hook), "statusCode": 0,
                              "statusMessage": "deleted"})


async def speech_profiles(request: web.Request) -> web.Response:
    subaccount = request.match_info["subaccount"]
    denied = _webhook_denied(request, subaccount)
    if denied is not None:
        return denied
    profiles = [{"speechProfileCode": code, "localeCode": locale, "localeDescription": description,
                 "gender": gender} for code, locale, description, gender in request.app[STATE].speech_profiles.values()]
    return web.json_response({"speechProfiles": profiles, "statusCode": 0, "statusMessage": "ok"})


# --- admin API (/__sandbox/) -------------------------------------------------------------

async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


def _caller_id(value: object) -> str:
    number = rules.e164(value, None) if isinstance(value, str) else None
    if number is None:
        raise web.HTTPBadRequest(text=f"a caller ID must be an international number, got {value!r}")
    return number


def _whitelist(state: State, sub: str, numbers: list[str]) -> list[str]:
    whitelisted = state.caller_ids.setdefault(sub, [])
    whitelisted.extend(n for n in numbers if n not in whitelisted)
    return whitelisted


async def add_subaccount(request: web.Request) -> web.Response:
    data = await _json(request)
    sub, key, caller_ids = data.get("id"), data.get("api_key"), data.get("caller_ids") or []
    if not isinstance(sub, str) or not isinstance(key, str) or not key:
        raise web.HTTPBadRequest(text="need 'id' and 'api_key' strings")
    if not isinstance(caller_ids, list):
        raise web.HTTPBadRequest(text="'caller_ids' must be a list of numbers")
    numbers = [_caller_id(n) for n in caller_ids]
    request.app[STATE].api_keys.setdefault(sub, set()).add(key)
    return web.json_response({"id": sub, "caller_ids": _whitelist(request.app[STATE], sub, numbers)})


async def add_caller_id(request: web.Request) -> web.Response:
    data = await _json(request)
    sub = request.match_info["subaccount"]
    return web.json_response({"id": sub, "caller_ids": _whitelist(request.app[STATE], sub,
                                                                  [_caller_id(data.get("caller_id"))])})


async def list_calls(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].calls)


async def set_call_outcome(request: web.Request) -> web.Response:
    return await _set_outcome(request, VoiceOutcome, request.app[STATE].call_outcomes)


async def set_voice_webhook(request: web.Request) -> web.Response:
    data = await _json(request)
    sub = data.get("subaccount")
    if not isinstance(sub, str):
        raise web.HTTPBadRequest(text="need 'subaccount'")
    problem = store_webhook(request.app[STATE], sub, {k: v for k, v in data.items() if k != "subaccount"})
    if problem is not None:
        raise web.HTTPBadRequest(text=problem)
    return _hooks_answer(request.app[STATE], sub)


async def show_voice_webhooks(request: web.Request) -> web.Response:
    return _hooks_answer(request.app[STATE], request.match_info["subaccount"])


async def add_speech_profile(request: web.Request) -> web.Response:
    data = await _json(request)
    code = data.get("code")
    if not isinstance(code, str) or not callflows.PROFILE_CODE.match(code):
        raise web.HTTPBadRequest(text="need 'code', a speech profile like fr-FR-DeniseNeural")
    locale = "-".join(code.split("-")[:2])
    profile = (code, locale, str(data.get("description") or locale), str(data.get("gender") or "F"))
    request.app[STATE].speech_profiles[code] = profile
    return web.json_response({"code": code, "locale": locale})


async def revoke_key(request: web.Request) -> web.Response:
    data = await _json(request)
    request.app[STATE].api_keys.get(request.match_info["subaccount"], set()).discard(data.get("api_key", ""))
    return web.json_response({})


async def list_messages(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].messages)


async def list_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].requests)


async def list_webhook_requests(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].webhook_requests)


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


async def _set_outcome(request: web.Request, kind: type[Outcome] | type[VoiceOutcome],
                       outcomes: dict[str, Any]) -> web.Response:
    """Steer what happens to messages (or calls) to one destination: ``outcomes[digits]``."""
    data = await _json(request)
    destination = rules.e164(str(data.get("destination", "")), None)
    if destination is None:
        raise web.HTTPBadRequest(text="need 'destination', a valid international number")
    try:
        outcome = kind.from_json(data)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    outcomes[destination] = outcome
    return web.json_response({"destination": destination, **asdict(outcome)})


async def set_outcome(request: web.Request) -> web.Response:
    return await _set_outcome(request, Outcome, request.app[STATE].outcomes)


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


async def list_feedback(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].feedback)


async def set_tracking(request: web.Request) -> web.Response:
    data = await _json(request)
    sub, enabled = data.get("subaccount"), data.get("enabled", True)
    if not isinstance(sub, str) or not isinstance(enabled, bool):
        raise web.HTTPBadRequest(text="need 'subaccount' (string) and 'enabled' (boolean)")
    tracking = request.app[STATE].tracking_subaccounts
    if enabled:
        tracking.add(sub)
    else:
        tracking.discard(sub)
    return web.json_response({"subaccount": sub, "enabled": enabled})


async def advance_clock(request: web.Request) -> web.Response:
    data = await _json(request)
    seconds = data.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise web.HTTPBadRequest(text="need 'seconds', a number >= 0")
    state = request.app[STATE]
    state.clock_offset += float(seconds)
    return web.json_response({"clock_offset": state.clock_offset})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(receipts: Dispatcher) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = State()
    app[RECEIPTS] = receipts
    app.router.add_post("/api/v1/subaccounts/{subaccount}/messages", send_one)
    app.router.add_post("/api/v1/subaccounts/{subaccount}/messages/batch", send_batch)
    app.router.add_post("/api/v1/subaccounts/{subaccount}/messages/{umid}/feedback", send_feedback)
    app.router.add_post("/api/v1/subaccounts/{subaccount}/callflows", place_callflow)
    app.router.add_get("/api/v1/subaccounts/{subaccount}/webhooks", list_webhooks)
    app.router.add_post("/api/v1/subaccounts/{subaccount}/webhooks", create_webhook)
    app.router.add_delete("/api/v1/subaccounts/{subaccount}/webhooks/{type}", delete_webhook)
    app.router.add_get("/api/v1/subaccounts/{subaccount}/speech-profiles", speech_profiles)
    app.router.add_get("/__sandbox/health", health)
    app.router.add_get("/__sandbox/feedback", list_feedback)
    app.router.add_post("/__sandbox/tracking", set_tracking)
    app.router.add_post("/__sandbox/clock", advance_clock)
    app.router.add_post("/__sandbox/subaccounts", add_subaccount)
    app.router.add_post("/__sandbox/subaccounts/{subaccount}/revoke", revoke_key)
    app.router.add_post("/__sandbox/subaccounts/{subaccount}/caller-ids", add_caller_id)
    app.router.add_get("/__sandbox/calls", list_calls)
    app.router.add_post("/__sandbox/call-outcomes", set_call_outcome)
    app.router.add_post("/__sandbox/voice-webhooks", set_voice_webhook)
    app.router.add_get("/__sandbox/subaccounts/{subaccount}/voice-webhooks", show_voice_webhooks)
    app.router.add_post("/__sandbox/speech-profiles", add_speech_profile)
    app.router.add_get("/__sandbox/messages", list_messages)
    app.router.add_get("/__sandbox/requests", list_requests)
    app.router.add_get("/__sandbox/webhook-requests", list_webhook_requests)
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
