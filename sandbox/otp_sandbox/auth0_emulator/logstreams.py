"""Log streams: the ``/api/v2/log-streams`` store (type ``http``) and the delivery of the tenant's
log events to each stream's ``httpEndpoint``.

Sources (auth0/docs-v2 at 092b879e, terraform-provider-auth0's recordings, go-auth0):

- Fields: ``{id, name, type, status, sink, filters?, isPriority}``; an http sink is
  ``{httpEndpoint, httpContentType, httpContentFormat (JSONLINES|JSONARRAY|JSONOBJECT),
  httpAuthorization, httpCustomHeaders [{header, value}]}``; filters ``[{type: "category",
  name}]`` with go-auth0's category names; status ``active|paused|suspended``. A real tenant's
  POST answers **200** (not 201) with ``status: "active"`` and ``isPriority: false``, and echoes
  ``httpAuthorization`` back in every answer (terraform-provider-auth0
  ``test/data/recordings/TestAccLogStreamHTTP.yaml``): the emulator does the same.
- Categories: the directory of each event type's page under ``main/docs/tenant-logs/`` (e.g.
  ``other/gd-send-sms.mdx``, ``user-notification/cs.mdx``, ``auth-login-success/s.mdx``). The MFA
  phone events (``gd_send_sms``, ``gd_auth_failed``...) are all in ``other``.
- Delivery (``customize/log-streams.mdx``, ``check-log-stream-health.mdx``,
  ``custom-log-streams.mdx``): at least once, "up to three times", then an error in the stream's
  health, then "we restart this process for any errored log until the problem is resolved"; after
  7 consecutive days of failure the stream stops (the page says "pause", the health page
  "disabled ... because of successive errors": the API status for that is ``suspended``). Paused
  streams queue their events and deliver them on resume. Each item is ``{log_id, data}``
  (Elastic's Auth0 log-stream samples); a custom webhook gets JSON lines by default.

Chosen where the sources are silent (the stricter way for a receiver):

- Only ``type: "http"`` is modelled (others: 400). POST refuses ``status`` (the Terraform
  provider sets it with a second PATCH), ``pii_config`` and ``startFrom`` (not modelled). A
  ``name`` is required and unique (409). ``httpEndpoint`` must be an ``https`` URL ("Self-signed
  HTTP certificates are not supported"; the emulator trusts only the sandbox CA). PATCH replaces
  the whole ``sink`` (checked as on create) and the whole ``filters``; ``type`` cannot change;
  a client may set ``status`` ``active`` or ``paused`` only (``suspended`` is Auth0's).
- At most ``MAX_STREAMS`` (2) streams per tenant (the limit auth0-PHP PR #451 reports; Auth0 says
  only "the log stream limit depicted in the pricing plan"; 400; ``set_log_stream_limit`` on the
  launcher changes it). Prioritized streams (``isPriority: true``) "do not count towards the log
  stream limit" (``secure/security-center/prioritized-log-streams.mdx``).
- Batches: events emitted within ``BATCH_SECONDS`` of each other go in one POST (at most
  ``MAX_BATCH``); ``JSONOBJECT`` sends one event per POST. An attempt fails on a non-2xx answer,
  no answer within ``ATTEMPT_TIMEOUT`` or a connection error; three attempts ``RETRY_SECONDS``
  apart make a round; failed rounds repeat with a backoff doubling from ``ROUND_BACKOFF`` to
  ``MAX_ROUND_BACKOFF``; failing for ``SUSPEND_AFTER`` (7 days) suspends the stream. While a
  stream is suspended its new events are dropped; the failed ones are retried after a PATCH
  back to ``active``. Events emitted before a stream was created are not sent to it.
  ``time_factor`` scales every one of these durations (tests use a tiny one).
- Endpoints are reached only on loopback (anything else counts as a failed attempt).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import secrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .errors import ApiError, conflict, not_found, payload_error
from .validation import array, body_object, boolean, string

_CATEGORY_CODES = {
    "actions": "actions_execution_failed",
    "auth.login.fail": "f fcoa fens fp fu",
    "auth.login.notification": "scv w",
    "auth.login.success": "s scoa sdel sens",
    "auth.logout.fail": "federated_logout_failed flo oidc_backchannel_logout_failed universal_logout_failed",
    "auth.logout.success": "oidc_backchannel_logout_succeeded slo universal_logout_succeeded",
    "auth.signup.fail": "fs",
    "auth.signup.success": "ss",
    "auth.silent_auth.fail": "fdelsa fsa",
    "auth.silent_auth.success": "sdelsa ssa",
    "auth.token_exchange.fail": (
        "ciba_exchange_failed failed_on_behalf_of_token_exchange fdeleacft feacft feccft fecte fede "
        "feoobft feotpft fepft fepotpft fercft ferrt fertft idjag_exchange_failed "
        "jwt_bearer_exchange_failed"),
    "auth.token_exchange.success": (
        "ciba_exchange_succeeded feta idjag_exchange_succeeded sdeleacft seacft seccft secte sede "
        "seoobft seotpft sepft sepkoobft sepkotpft sepkrcft sercft sertft seta "
        "success_on_behalf_of_token_exchange"),
    "management.fail": "",
    "management.success": "mgmt_api_read sapi",
    "scim.event": "fscim sscim",
    "system.notification": (
        "acul_sdk_notice api_limit api_limit_warning appi custom_domain_verification_failed depnote "
        "directory_sync_completed directory_sync_failed directory_sync_started fcpro fui "
        "limit_delegation limit_mu limit_phone limit_wc"),
    "user.fail": (
        "connected_accounts_connection_failed connected_accounts_delete_failed fce fcp fcph fcpn fcpr "
        "fcu fd fdeaz fdecc fdu fn fv fvr my_account_authentication_method_failed ss_sso_failure"),
    "user.notification": ("cs gd_enrollment_complete gd_start_enroll gd_unenroll "
                          "gd_update_device_account ss_sso_info ublkdu"),
    "user.success": (
        "connected_accounts_connection_succeeded connected_accounts_delete_succeeded "
        "my_account_authentication_method_succeeded sce scp scpn scpr scu sd sdu srrt "
        "ss_sso_success sui sv svr"),
    "other": "",  # every event type not listed above ("This category contains unclassified events")
}
CATEGORY_OF = {code: category for category, codes in _CATEGORY_CODES.items() for code in codes.split()}
CATEGORIES = tuple(_CATEGORY_CODES)
CONTENT_FORMATS = ("JSONLINES", "JSONARRAY", "JSONOBJECT")
CLIENT_STATUSES = ("active", "paused")
MAX_STREAMS = 2
SINK_FIELDS = frozenset({"httpEndpoint", "httpContentType", "httpContentFormat", "httpAuthorization",
                         "httpCustomHeaders"})
CREATE_FIELDS = frozenset({"name", "type", "sink", "filters", "isPriority"})
UPDATE_FIELDS = frozenset({"name", "status", "sink", "filters", "isPriority"})

BATCH_SECONDS = 1.0
MAX_BATCH = 100
ATTEMPTS_PER_ROUND = 3
RETRY_SECONDS = 1.0
ROUND_BACKOFF = 30.0
MAX_ROUND_BACKOFF = 3600.0
SUSPEND_AFTER = 7 * 24 * 3600.0
ATTEMPT_TIMEOUT = 10.0
MAX_HEALTH_ERRORS = 10  # "the last ten errors"


def category_of(event_type: str) -> str:
    return CATEGORY_OF.get(event_type, "other")


@dataclass
class LogStream:
    id: str
    name: str
    type: str
    status: str
    sink: dict[str, Any]
    filters: list[dict[str, str]] | None
    is_priority: bool
    created_seq: int  # the tenant log's length when it was created: older events are not sent
    queue: list[dict[str, Any]] = field(default_factory=list)
    failing_since: float | None = None  # nominal seconds, on the delivery clock
    errors: list[dict[str, Any]] = field(default_factory=list)
    delivered: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type,
                                "status": self.status, "sink": dict(self.sink)}
        if self.filters is not None:
            data["filters"] = [dict(f) for f in self.filters]
        data["isPriority"] = self.is_priority
        return data

    def wants(self, event: dict[str, Any]) -> bool:
        if not self.filters:
            return True  # "If omitted or empty, all events will be delivered."
        return category_of(event.get("type", "")) in {f["name"] for f in self.filters}


def _sink(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise payload_error("Expected type object but found type " + type(value).__name__ + " (sink)")
    sink = body_object(value, SINK_FIELDS, ("httpEndpoint",))
    endpoint = string(sink["httpEndpoint"], "sink.httpEndpoint")
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise payload_error("Object didn't pass validation for format absolute-https-uri-or-empty: "
                            f"{endpoint} (sink.httpEndpoint)")
    out: dict[str, Any] = {"httpEndpoint": endpoint}
    if "httpAuthorization" in sink:
        out["httpAuthorization"] = string(sink["httpAuthorization"], "sink.httpAuthorization")
    out["httpContentFormat"] = sink.get("httpContentFormat", "JSONLINES")
    if out["httpContentFormat"] not in CONTENT_FORMATS:
        raise payload_error(f"No enum match for: \"{out['httpContentFormat']}\" (sink.httpContentFormat)")
    out["httpContentType"] = string(sink.get("httpContentType", "application/json"), "sink.httpContentType")
    if "httpCustomHeaders" in sink:
        headers = array(sink["httpCustomHeaders"], "sink.httpCustomHeaders")
        for item in headers:
            if not isinstance(item, dict) or set(item) != {"header", "value"} or not all(
                    isinstance(v, str) and v for v in item.values()):
                raise payload_error("Expected {header, value} strings (sink.httpCustomHeaders)")
            if item["header"].lower() in ("authorization", "content-type", "content-length", "host"):
                raise payload_error(f"Header {item['header']} cannot be set (sink.httpCustomHeaders)")
        out["httpCustomHeaders"] = [dict(h) for h in headers]
    return out


def _filters(value: Any) -> list[dict[str, str]]:
    items = array(value, "filters")
    for item in items:
        if not isinstance(item, dict) or set(item) - {"type", "name"}:
            raise payload_error("Expected {type, name} objects (filters)")
        if item.get("type") != "category":
            raise payload_error(f"No enum match for: \"{item.get('type')}\" (filters.type)")
        if item.get("name") not in CATEGORIES:
            raise payload_error(f"No enum match for: \"{item.get('name')}\" (filters.name)")
    return [{"type": "category", "name": item["name"]} for item in items]


class LogStreamStore:
    """The tenant's streams and their delivery (``deliver`` needs a running event loop)."""

    def __init__(self) -> None:
        self.streams: dict[str, LogStream] = {}
        self.delivery = Delivery()
        self.limit = MAX_STREAMS

    def _name(self, value: Any, own: str | None = None) -> str:
        name = string(value, "name")
        if any(s.name == name and s.id != own for s in self.streams.values()):
            raise conflict(f"A log stream with the name {name!r} already exists")
        return name

    def create(self, body: Any, log_length: int) -> LogStream:
        data = body_object(body, CREATE_FIELDS, ("name", "type", "sink"))
        if data["type"] != "http":
            raise ApiError(400, f"Log stream type {data['type']!r} is not supported by the emulator "
                                "(only http)", "invalid_body")
        name = self._name(data["name"])
        priority = boolean(data.get("isPriority", False), "isPriority")
        counted = sum(1 for s in self.streams.values() if not s.is_priority)
        if not priority and counted >= self.limit:
            raise ApiError(400, f"You have reached the maximum number of log streams ({self.limit}) "
                                "for this tenant", "too_many_entities")
        stream = LogStream(id="lst_" + "".join(secrets.choice("0123456789") for _ in range(16)),
                           name=name, type="http", status="active", sink=_sink(data["sink"]),
                           filters=_filters(data["filters"]) if "filters" in data else None,
                           is_priority=priority, created_seq=log_length)
        self.streams[stream.id] = stream
        self.delivery.start(stream)
        return stream

    def get(self, stream_id: str) -> LogStream:
        stream = self.streams.get(stream_id)
        if stream is None:
            raise not_found("The log stream does not exist", "inexistent_log_stream")
        return stream

    def update(self, stream_id: str, body: Any) -> LogStream:
        stream = self.get(stream_id)
        if isinstance(body, dict) and "type" in body:
            raise payload_error("Additional properties not allowed: type")
        data = body_object(body, UPDATE_FIELDS)
        if not data:
            raise payload_error("Too few properties defined (0), minimum 1")
        name = self._name(data["name"], stream.id) if "name" in data else stream.name
        sink = _sink(data["sink"]) if "sink" in data else stream.sink
        filters = _filters(data["filters"]) if "filters" in data else stream.filters
        priority = boolean(data["isPriority"], "isPriority") if "isPriority" in data else stream.is_priority
        if stream.is_priority and not priority and sum(
                1 for s in self.streams.values() if not s.is_priority) >= self.limit:
            raise ApiError(400, f"You have reached the maximum number of log streams ({self.limit}) "
                                "for this tenant", "too_many_entities")
        status = data.get("status", stream.status)
        if "status" in data and status not in CLIENT_STATUSES:
            raise payload_error(f"No enum match for: \"{status}\" (status; suspended is set by Auth0)")
        stream.name, stream.sink, stream.filters, stream.is_priority = name, sink, filters, priority
        if status != stream.status:
            if stream.status == "suspended":
                stream.failing_since = None  # "Restart Stream": retry delivery
            stream.status = status
        stream.wake.set()
        return stream

    def delete(self, stream_id: str) -> None:
        stream = self.get(stream_id)
        del self.streams[stream_id]
        if stream.task is not None:
            stream.task.cancel()

    def publish(self, event: dict[str, Any]) -> None:
        for stream in self.streams.values():
            if stream.status != "suspended" and stream.wants(event):
                stream.queue.append(event)
                stream.wake.set()

    def state(self) -> list[dict[str, Any]]:
        return [{**s.to_json(), "pending": len(s.queue), "delivered": s.delivered,
                 "errors": list(s.errors), "failing_since": s.failing_since}
                for s in self.streams.values()]

    async def close(self) -> None:
        for stream in self.streams.values():
            if stream.task is not None:
                stream.task.cancel()
        await self.delivery.close()


def item(event: dict[str, Any]) -> dict[str, Any]:
    """What an http stream sends for one log event."""
    return {"log_id": event["log_id"], "data": event}


def body_for(fmt: str, events: list[dict[str, Any]]) -> bytes:
    items = [item(e) for e in events]
    if fmt == "JSONARRAY":
        return json.dumps(items).encode()
    if fmt == "JSONOBJECT":
        return json.dumps(items[0]).encode()
    return "\n".join(json.dumps(i) for i in items).encode()


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Delivery:
    """Posts each stream's queued events (see the module docstring for the schedule)."""

    def __init__(self) -> None:
        self.ssl_context: ssl.SSLContext | None = None
        self.time_factor = 1.0
        self.attempts: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._base_real = time.monotonic()
        self._base_nominal = 0.0
        self._seq = itertools.count(1)

    def nominal(self) -> float:
        """Seconds on the delivery clock (real seconds divided by the time factor)."""
        return self._base_nominal + (time.monotonic() - self._base_real) / self.time_factor

    def set_time_factor(self, factor: float) -> None:
        if not 0 < factor <= 1:
            raise ValueError("time_factor must be in (0, 1]")
        self._base_nominal, self._base_real = self.nominal(), time.monotonic()
        self.time_factor = factor

    async def _sleep(self, nominal_seconds: float) -> None:
        await asyncio.sleep(nominal_seconds * self.time_factor)

    def start(self, stream: LogStream) -> None:
        stream.task = asyncio.get_running_loop().create_task(self._run(stream))

    async def _run(self, stream: LogStream) -> None:
        backoff = ROUND_BACKOFF
        while True:
            if not stream.queue or stream.status != "active":
                stream.wake.clear()
                await stream.wake.wait()
                continue
            await self._sleep(BATCH_SECONDS)
            if stream.status != "active" or not stream.queue:
                continue
            size = 1 if stream.sink["httpContentFormat"] == "JSONOBJECT" else MAX_BATCH
            batch = stream.queue[:size]
            if await self._round(stream, batch):
                del stream.queue[:len(batch)]
                stream.delivered += len(batch)
                stream.failing_since, backoff = None, ROUND_BACKOFF
                continue
            now = self.nominal()
            if stream.failing_since is None:
                stream.failing_since = now
            if now - stream.failing_since >= SUSPEND_AFTER:
                stream.status = "suspended"
                continue
            await self._sleep(backoff)
            backoff = min(backoff * 2, MAX_ROUND_BACKOFF)

    async def _round(self, stream: LogStream, batch: list[dict[str, Any]]) -> bool:
        result: int | str = "not sent"
        for attempt in range(1, ATTEMPTS_PER_ROUND + 1):
            if attempt > 1:
                await self._sleep(RETRY_SECONDS * (attempt - 1))
            if stream.status != "active":
                return False
            result = await self._post(stream, batch)
            self.attempts.append({"stream": stream.id, "seq": next(self._seq), "attempt": attempt,
                                  "result": result, "log_ids": [e["log_id"] for e in batch],
                                  "nominal": round(self.nominal(), 3)})
            if isinstance(result, int) and 200 <= result < 300:
                return True
        stream.errors = (stream.errors + [{"result": result, "nominal": round(self.nominal(), 3),
                                           "log_ids": [e["log_id"] for e in batch]}])[-MAX_HEALTH_ERRORS:]
        return False

    async def _post(self, stream: LogStream, batch: list[dict[str, Any]]) -> int | str:
        sink = stream.sink
        if not _loopback(sink["httpEndpoint"]):
            return "not allowed"
        headers = {"Content-Type": sink["httpContentType"]}
        for custom in sink.get("httpCustomHeaders", []):
            headers[custom["header"]] = custom["value"]
        if sink.get("httpAuthorization"):
            headers["Authorization"] = sink["httpAuthorization"]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=max(0.5, ATTEMPT_TIMEOUT * self.time_factor))
        try:
            async with self._session.post(sink["httpEndpoint"], data=body_for(sink["httpContentFormat"], batch),
                                          headers=headers, timeout=timeout,
                                          ssl=self.ssl_context or True) as response:
                await response.read()
                return response.status
        except asyncio.TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError, ssl.SSLError):
            return "connection error"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
