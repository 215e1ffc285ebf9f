"""Conversion tracking: which sent codes were used, learnt from the tenant's Auth0 log stream,
and told to 8x8 (``POST .../messages/{umid}/feedback``).

- Every accepted SMS send (sent with ``track: "Outcome"``) is recorded for ``RECORD_TTL``:
  its umid, when, the country, a keyed digest of the number and the request's ``subject``
  (HMAC-SHA256 of the Auth0 user id under the signing key that signed the send). Nothing raw
  is kept: the number digest's key is derived from the 8x8 API key (the same on every
  replica, never stored), so a store dump reveals no number and no user id.
- The sink (``POST <prefix>/v1/auth0-logs``) takes Auth0's http log stream batches (JSONARRAY,
  JSONLINES, JSONOBJECT of ``{log_id, data}``) with ``Authorization: Bearer <token>`` (every
  line of the token file). A "code used" event (MFA ``gd_auth_succeed`` /
  ``gd_enrollment_complete``, passwordless ``s``) is matched to the newest unresolved send of
  that user in the last ``MATCH_WINDOW``: by the number's digest, else by subject (a number
  names the message, a subject only the user).
- A matched send is reported ``success`` at once; one still unresolved ``failure_after`` after
  it was sent is reported ``failure``. Each is claimed once (in Redis with ``--state-url``, so
  once across replicas) before it is posted; 5xx and timeouts are retried with backoff, never
  past 8x8's 15-minute window; a 4xx is final.
- The conversion rule (``outcomes.ConversionListener``) is told of each send and conversion.

Anyone can POST to the sink: a wrong token is refused before the body is read; a body is
bounded (``MAX_BATCH_BYTES``) in size and time; repeated ``log_id``s are remembered for
``MATCH_WINDOW`` (bounded) and have no effect; an event for a message the relay never sent
changes nothing. The sink never takes a send's in-flight slot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import random
import re
import time
from collections import Counter as Tally, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import CollectorRegistry, Counter

from . import outcomes
from .keys import WatchedFile, parse_signing_keys
from .tally import MinuteTally

if TYPE_CHECKING:  # pipeline imports this module
    from aiohttp import web

    from .pipeline import Intake

log = logging.getLogger("otp_relay.conversion")

SINK_PATH = "/v1/auth0-logs"
LIFT_PATH = "/v1/conversion/lift"
# Auth0 batches up to 100 events of ~1-3 KiB each: 1 MiB holds a full batch several times
# over and still bounds what one unauthenticated-until-checked connection makes us buffer.
MAX_BATCH_BYTES = 1024 * 1024
MAX_EVENTS = 1000  # items of one batch looked at, at most
MATCH_WINDOW = 15 * 60  # seconds: 8x8 takes feedback this long after the send
RECORD_TTL = 20 * 60  # seconds a send's record is kept
MAX_RECORDS = 100_000  # sends kept in process
MAX_LOG_IDS = 200_000  # log ids remembered in process
BLOCKED_TYPE = "https://otp-relay.invalid/problems/conversion-blocked"
BLOCKED_DETAIL = "sends to this number prefix are paused: its codes are not being used"
MAX_LIFT_KEY = 32
MAX_LIFT_BODY = 1024
FEEDBACK_ATTEMPTS = 5
FEEDBACK_TIMEOUT = 5.0
FEEDBACK_BASE_DELAY = 1.0
FEEDBACK_MARGIN = 30.0  # seconds before 8x8's window closes after which nothing is posted
SCAN_INTERVAL = 5.0  # seconds between looks for unused codes
USED = frozenset({"gd_auth_succeed", "gd_enrollment_complete", "s"})
FAILED = frozenset({"gd_auth_failed", "f"})
SENT = frozenset({"gd_send_sms", "gd_send_voice", "cs"})
LOG_RESULTS = ("matched", "unknown", "replayed", "ignored", "malformed", "unauthorized")
FEEDBACK_RESULTS = ("posted", "retried", "failed")
OUTCOMES = ("success", "failure")
TOP_COUNTRIES = 20
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_LOG_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def subject_for(signing_key: str, user_id: str) -> str:
    """What the Auth0 code sends as ``subject``: HMAC-SHA256(signing key, user id), hex."""
    return hmac.new(signing_key.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def number_key(api_key: str) -> bytes:
    """The key of the number digests: derived from the 8x8 API key, so every replica has it
    and no store holds it."""
    return hmac.new(api_key.encode(), b"otp-relay conversion number digest v1", hashlib.sha256).digest()


def number_digest(key: bytes, number: str) -> str:
    return hmac.new(key, number.encode(), hashlib.sha256).hexdigest()[:32]


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


# --- reading a batch ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    log_id: str
    type: str
    user_id: str | None
    number: str | None  # E.164, when the event names one


def _items(raw: bytes) -> tuple[list[Any], int]:
    """The items of a JSONARRAY, JSONOBJECT or JSONLINES body and how many lines did not parse."""
    try:
        whole = orjson.loads(raw)
    except orjson.JSONDecodeError:
        whole = None
    else:
        if isinstance(whole, list):
            return whole[:MAX_EVENTS], max(0, len(whole) - MAX_EVENTS)
        return [whole], 0
    items: list[Any] = []
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        if len(items) + bad >= MAX_EVENTS:
            bad += 1
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            bad += 1
    return items, bad


def read_event(item: Any) -> Event | None:
    """One ``{log_id, data}`` item, or None when it is not one."""
    if not isinstance(item, dict):
        return None
    data = item.get("data")
    log_id = item.get("log_id")
    if not isinstance(data, dict):
        return None
    if not isinstance(log_id, str):
        log_id = data.get("log_id")
    kind = data.get("type")
    if not isinstance(log_id, str) or not _LOG_ID.match(log_id) or not isinstance(kind, str):
        return None
    user_id = data.get("user_id")
    user_id = user_id if isinstance(user_id, str) and 0 < len(user_id) <= 512 else None
    number = None
    details = data.get("details")
    authenticator = details.get("authenticator") if isinstance(details, dict) else None
    if isinstance(authenticator, dict) and isinstance(authenticator.get("phone_number"), str):
        number = authenticator["phone_number"]
    elif isinstance(data.get("user_name"), str):
        number = data["user_name"]
    if number is not None and not _E164.match(number):
        number = None
    return Event(log_id, kind[:64], user_id, number)


# --- records -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Record:
    umid: str
    at: float
    country: str
    number: str  # digest
    subject: str  # "" when the send had none


class Store(Protocol):
    async def sent(self, record: Record) -> None: ...

    async def first_log(self, log_id: str, now: float) -> bool:
        """True the first time ``log_id`` is seen (within ``MATCH_WINDOW``)."""
        ...

    async def match(self, subjects: list[str], number: str | None, now: float) -> Record | None:
        """Claim (as ``success``) the newest unresolved send to this number, else of these
        subjects, sent within ``MATCH_WINDOW``. The number first: it names the message, while
        one user may have been sent codes to two numbers (a subject names only the user)."""
        ...

    async def due(self, before: float, now: float) -> list[Record]:
        """Claim (as ``failure``) unresolved sends made before ``before``."""
        ...


class MemoryStore:
    def __init__(self, limit: int = MAX_RECORDS, clock: Callable[[], float] = time.time) -> None:
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._resolved: set[str] = set()
        self._by: dict[str, deque[str]] = {}  # "s:<subject>" / "n:<digest>" -> umids, oldest first
        self._logs: OrderedDict[str, float] = OrderedDict()
        self._limit, self._clock = limit, clock

    def _expire(self, now: float) -> None:
        records = self._records
        while records and (len(records) > self._limit or next(iter(records.values())).at < now - RECORD_TTL):
            umid, record = records.popitem(last=False)
            self._resolved.discard(umid)
            for index in (f"s:{record.subject}" if record.subject else "", f"n:{record.number}"):
                umids = self._by.get(index)
                if umids is not None:
                    while umids and umids[0] not in records:
                        umids.popleft()
                    if not umids:
                        del self._by[index]
        logs = self._logs
        while logs and (len(logs) > MAX_LOG_IDS or next(iter(logs.values())) < now - MATCH_WINDOW):
            logs.popitem(last=False)

    async def sent(self, record: Record) -> None:
        self._records[record.umid] = record
        for index in ([f"s:{record.subject}"] if record.subject else []) + [f"n:{record.number}"]:
            self._by.setdefault(index, deque()).append(record.umid)
        self._expire(record.at)

    async def first_log(self, log_id: str, now: float) -> bool:
        self._expire(now)
        if log_id in self._logs:
            return False
        self._logs[log_id] = now
        return True

    async def match(self, subjects: list[str], number: str | None, now: float) -> Record | None:
        self._expire(now)
        for index in ([f"n:{number}"] if number else []) + [f"s:{s}" for s in subjects]:
            for umid in reversed(self._by.get(index, ())):
                record = self._records.get(umid)
                if record is None or record.at < now - MATCH_WINDOW:
                    break
                if umid not in self._resolved:
                    self._resolved.add(umid)
                    return record
        return None

    async def due(self, before: float, now: float) -> list[Record]:
        self._expire(now)
        found = []
        for umid, record in self._records.items():
            if record.at >= before:
                break
            if umid not in self._resolved:
                self._resolved.add(umid)
                found.append(record)
        return found


# KEYS: the pending set. ARGV: record key prefix, horizon ms, how many at most. Takes the pending
# sends made before the horizon off the set and claims each one not claimed yet as failure:
# {umid, time, country, ...} of those this call claimed.
_DUE = """
local umids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, umid in ipairs(umids) do
  redis.call('ZREM', KEYS[1], umid)
  local key = ARGV[1] .. umid
  local at = redis.call('HGET', key, 't')
  if at and redis.call('HSETNX', key, 'r', 'failure') == 1 then
    table.insert(claimed, umid)
    table.insert(claimed, at)
    table.insert(claimed, redis.call('HGET', key, 'c') or 'ZZ')
  end
end
return claimed
"""
# KEYS: index sorted sets (subjects first, then the number); ARGV: record key prefix, horizon ms
# The newest unresolved send of the first index that has one, claimed as success.
_MATCH = """
for i = 1, #KEYS do
  local umids = redis.call('ZREVRANGEBYSCORE', KEYS[i], '+inf', ARGV[2], 'LIMIT', 0, 50)
  for _, umid in ipairs(umids) do
    local key = ARGV[1] .. umid
    if redis.call('EXISTS', key) == 1 and redis.call('HSETNX', key, 'r', 'success') == 1 then
      redis.call('ZREM', ARGV[3], umid)
      return {umid, redis.call('HGET', key, 't'), redis.call('HGET', key, 'c') or 'ZZ'}
    end
  end
end
return false
"""


class RedisStore:
    """The records shared by every replica: a hash per send (``r`` set once, by the claim), a
    sorted set per subject and per number digest, the pending set the failure scan reads, and
    one key per log id seen; every key expires."""

    def __init__(self, client: Any, prefix: str) -> None:
        from redis.exceptions import RedisError  # noqa: PLC0415  redis only with a store

        self._client, self._p = client, f"{{{prefix}}}:conv:"
        self._errors = (RedisError, OSError)
        self._due = client.register_script(_DUE)
        self._match = client.register_script(_MATCH)

    async def sent(self, record: Record) -> None:
        key, ttl, score = f"{self._p}u:{record.umid}", RECORD_TTL, int(record.at * 1000)
        indexes = ([f"{self._p}s:{record.subject}"] if record.subject else []) + [f"{self._p}n:{record.number}"]
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"t": repr(record.at), "c": record.country, "n": record.number,
                                        "s": record.subject})
                pipe.expire(key, ttl)
                for index in indexes:
                    pipe.zadd(index, {record.umid: score})
                    pipe.zremrangebyscore(index, "-inf", score - RECORD_TTL * 1000)
                    pipe.expire(index, ttl)
                pending = f"{self._p}pending"
                pipe.zadd(pending, {record.umid: score})
                pipe.zremrangebyscore(pending, "-inf", score - RECORD_TTL * 1000)
                pipe.zremrangebyrank(pending, 0, -MAX_RECORDS - 1)
                pipe.expire(pending, ttl)
                await pipe.execute()
        except self._errors:
            log.warning("conversion record not stored: the state store does not answer")

    async def first_log(self, log_id: str, now: float) -> bool:
        try:
            return bool(await self._client.set(f"{self._p}l:{log_id}", "1", nx=True, ex=MATCH_WINDOW))
        except self._errors:
            return False  # unanswered: treated as seen (an event must never count twice)

    async def match(self, subjects: list[str], number: str | None, now: float) -> Record | None:
        keys = ([f"{self._p}n:{number}"] if number else []) + [f"{self._p}s:{s}" for s in subjects]
        if not keys:
            return None
        try:
            found = await self._match(keys=keys, args=[f"{self._p}u:", int((now - MATCH_WINDOW) * 1000),
                                                       f"{self._p}pending"])
        except self._errors:
            return None
        if not found:
            return None
        umid, at, country = found
        return Record(umid, float(at), country, "", "")

    async def due(self, before: float, now: float) -> list[Record]:
        try:
            found = await self._due(keys=[f"{self._p}pending"], args=[f"{self._p}u:", int(before * 1000), 500])
        except self._errors:
            return []
        return [Record(umid, float(at), country or "ZZ", "", "")
                for umid, at, country in zip(found[0::3], found[1::3], found[2::3])]


def store_for(state: Any, prefix: str) -> Store:
    client = getattr(state, "client", None)
    return RedisStore(client, prefix) if client is not None else MemoryStore()


def _iso_ms(moment: float) -> str:
    return (dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def _rate(success: int, failure: int) -> float | None:
    return round(success / (success + failure), 4) if success + failure else None


class ConversionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter("otp_relay_conversion_outcomes", "Sent SMS codes by outcome: success "
                                "(used, learnt from the Auth0 log stream) or failure (unused after "
                                "--conversion-failure-after), by the send's country",
                                ["country", "outcome"], registry=registry)
        feedback = Counter("otp_relay_conversion_feedback", "Attempts to post conversion feedback to "
                           "8x8 by outcome and result (retried: a 5xx or no answer, tried again)",
                           ["outcome", "result"], registry=registry)
        self.feedback = {(o, r): feedback.labels(o, r) for o in OUTCOMES for r in FEEDBACK_RESULTS}
        events = Counter("otp_relay_log_events", "Auth0 log stream events (and refused sink requests: "
                         "unauthorized) by result", ["result"], registry=registry)
        self.events = {r: events.labels(r) for r in LOG_RESULTS}


# --- the tracker -------------------------------------------------------------------------------
@dataclass
class Poster:
    """How feedback reaches 8x8: ``call(method, path, api_key, payload, timeout)`` of the 8x8
    client (``upstream.EightByEight.call``) and the API key of the moment."""

    call: Callable[..., Any]
    api_key: Callable[[], str | None]
    sleep: Callable[[float], Any] = asyncio.sleep
    rng: Callable[[], float] = random.random


@dataclass
class Tracker:
    enabled: bool
    failure_after: float
    store: Store
    registry: CollectorRegistry
    token_file: WatchedFile | None = None
    listener: outcomes.ConversionListener = field(default_factory=outcomes.NoRule)
    clock: Callable[[], float] = time.time
    scan_interval: float = SCAN_INTERVAL

    def __post_init__(self) -> None:
        self.metrics = ConversionMetrics(self.registry)
        self.window = MinuteTally(RECORD_TTL, self.clock)  # the summary's counts
        self.poster: Poster | None = None
        self.signing_keys: Callable[[], list[str]] = list
        self._number_key: tuple[str, bytes] = ("", b"")
        self._tasks: set[asyncio.Task] = set()
        self._posting = 0
        self.events = 0
        self.last_event: float | None = None

    # --- keys and tokens ---------------------------------------------------------------
    def refresh(self) -> None:
        if self.token_file is not None:
            self.token_file.refresh()

    def tokens(self) -> list[str]:
        return (self.token_file.value or []) if self.token_file is not None else []

    def authorized(self, header: str | None) -> bool:
        """Constant time in the presented token, whichever line matches (or none)."""
        scheme, _, presented = (header or "").partition(" ")
        given = presented.strip().encode()
        found = False
        for token in self.tokens():
            found |= hmac.compare_digest(token.encode(), given)
        return found and scheme.lower() == "bearer" and bool(given)

    def _digest(self, number: str) -> str | None:
        api_key = self.poster.api_key() if self.poster is not None else None
        if not api_key:
            return None
        if self._number_key[0] != api_key:
            self._number_key = (api_key, number_key(api_key))
        return number_digest(self._number_key[1], number)

    # --- the send path ------------------------------------------------------------------
    async def check(self, recipient: str, country: str) -> outcomes.Gate:
        if not self.enabled:
            return outcomes.Allowed()
        try:
            return await self.listener.check(recipient, country, self.clock())
        except Exception:  # a broken rule must not stop real users' codes
            log.exception("conversion: the listener's check failed; the send goes on")
            return outcomes.Allowed()

    async def sent(self, umid: str, recipient: str, country: str, subject: str | None) -> None:
        """After 8x8 accepted an SMS: record it and tell the listener. Never raises."""
        if not self.enabled:
            return
        now = self.clock()
        country = country if len(country) == 2 and country.isalpha() else "ZZ"  # "001": non-geographic
        try:
            digest = self._digest(recipient)
            if digest is not None:
                await self.store.sent(Record(umid.lower(), now, country, digest, subject or ""))
            self.window.add("sent", f"sent:{country}")
            await self.listener.sent(outcomes.Sent(umid.lower(), recipient, country, now))
        except Exception:
            log.exception("conversion: recording a send failed")

    # --- the sink ---------------------------------------------------------------------------
    def unauthorized(self) -> None:
        self.metrics.events["unauthorized"].inc()

    async def batch(self, raw: bytes) -> dict[str, int]:
        """Every event of one batch; how many had each result."""
        items, bad = _items(raw)
        results: Tally[str] = Tally({"malformed": bad} if bad else {})
        now = self.clock()
        for item in items:
            event = read_event(item)
            if event is None:
                results["malformed"] += 1
                continue
            if not await self.store.first_log(event.log_id, now):
                results["replayed"] += 1
                continue
            self.events += 1
            self.last_event = now
            if event.type not in USED:
                results["ignored"] += 1
                continue
            results[await self._used(event, now)] += 1
        for result, n in results.items():
            self.metrics.events[result].inc(n)
        return dict(results)

    async def _used(self, event: Event, now: float) -> str:
        keys = self.signing_keys() if event.user_id else []
        subjects = [subject_for(k, event.user_id) for k in keys] if event.user_id else []
        digest = self._digest(event.number) if event.number else None
        record = await self.store.match(subjects, digest, now)
        if record is None:
            return "unknown"
        self._resolved(record, "success")
        try:
            await self.listener.converted(record.umid, now)
        except Exception:
            log.exception("conversion: the listener failed")
        return "matched"

    def _resolved(self, record: Record, outcome: str) -> None:
        self.metrics.outcomes.labels(record.country or "ZZ", outcome).inc()
        self.window.add(outcome, f"{outcome}:{record.country or 'ZZ'}")
        task = asyncio.ensure_future(self._post(record, outcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- feedback ------------------------------------------------------------------------------
    async def _post(self, record: Record, outcome: str) -> None:
        poster = self.poster
        if poster is None:
            return
        self._posting += 1
        try:
            close = record.at + MATCH_WINDOW - FEEDBACK_MARGIN
            for attempt in range(1, FEEDBACK_ATTEMPTS + 1):
                api_key = poster.api_key()
                now = self.clock()
                stamp = _iso_ms(now)  # milliseconds: 8x8 refuses a time before its own acceptance
                try:
                    status, _ = await poster.call("POST", f"messages/{record.umid}/feedback", api_key or "",
                                                  {"outcome": outcome, "timestamp": stamp},
                                                  timeout=FEEDBACK_TIMEOUT)
                except Exception:  # no answer: 8x8 may or may not have it; it takes one feedback only
                    status = 0
                if 200 <= status < 300:
                    self.metrics.feedback[outcome, "posted"].inc()
                    self.window.add("posted")
                    return
                delay = FEEDBACK_BASE_DELAY * 2 ** (attempt - 1) * (0.5 + poster.rng() / 2)
                if (0 < status < 500) or attempt == FEEDBACK_ATTEMPTS or self.clock() + delay > close:
                    self.metrics.feedback[outcome, "failed"].inc()
                    self.window.add("failed")
                    log.warning("conversion feedback not taken", extra={"umid": record.umid,
                                                                        "outcome": outcome, "status": status})
                    return
                self.metrics.feedback[outcome, "retried"].inc()
                await poster.sleep(delay)
        finally:
            self._posting -= 1

    async def scan(self) -> None:
        """Report every send still unresolved ``failure_after`` after it went out."""
        now = self.clock()
        for record in await self.store.due(now - self.failure_after, now):
            self._resolved(record, "failure")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            try:
                await self.scan()
            except Exception:
                log.exception("conversion: the failure scan failed")

    async def close(self, grace: float = 2.0) -> None:
        """At shutdown: let the feedback being posted finish for ``grace`` seconds, then stop."""
        try:
            await asyncio.wait_for(self.idle(), grace)
        except TimeoutError:
            for task in list(self._tasks):
                task.cancel()

    async def idle(self) -> None:
        """Wait until every feedback started so far has been posted (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- the summary ---------------------------------------------------------------------------
    async def summary(self) -> dict[str, Any]:
        total = self.window.total()
        sent, success, failure = total["sent"], total["success"], total["failure"]
        countries: dict[str, dict[str, Any]] = {}
        ranked = sorted(((k[5:], n) for k, n in total.items() if k.startswith("sent:")),
                        key=lambda kv: (-kv[1], kv[0]))[:TOP_COUNTRIES]
        for country, n in ranked:
            s, f = total[f"success:{country}"], total[f"failure:{country}"]
            countries[country] = {"sent": n, "success": s, "failure": f, "rate": _rate(s, f)}
        last = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_event))
                if self.last_event is not None else None)
        try:
            rule = await self.listener.summary(self.clock())
        except Exception:
            log.exception("conversion: the listener's summary failed")
            rule = {}
        return {
            "enabled": self.enabled, "windowSeconds": RECORD_TTL, "sent": sent, "success": success,
            "failure": failure, "pending": max(0, sent - success - failure), "rate": _rate(success, failure),
            "countries": countries,
            "feedback": {"posted": total["posted"], "failed": total["failed"], "pending": self._posting},
            "log_stream": {"events": self.events, "last_event": last,
                           "tokens": [token_id(t) for t in self.tokens()]},
            "rule": rule,
        }


def build(settings: Any, state: Any, registry: CollectorRegistry,
          on_reload: Callable[[str, bool], None] = lambda name, ok: None) -> Tracker:
    token_file = (WatchedFile("log_token", settings.log_token_file, parse_signing_keys, on_reload)
                  if settings.log_token_file else None)
    return Tracker(settings.conversion, settings.conversion_failure_after,
                   store_for(state, settings.state_prefix), registry, token_file)


def lift_key(raw: bytes) -> str | None:
    """The ``key`` of a lift request body, or None when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not 0 < len(key) <= MAX_LIFT_KEY or not key.isascii() or not key.isprintable():
        return None
    return key


# --- HTTP (aiohttp) -------------------------------------------------------------------------------
async def handle_sink(tracker: Tracker, intake: Intake, request: web.Request) -> web.Response:
    """``POST <prefix>/v1/auth0-logs``: 401 before anything is read for a wrong token; 413 too
    big; 408 too slow; else 200 with how many events had each result. The connection guard's
    bookkeeping and the bounded body read are the send path's (``intake``)."""
    from aiohttp import web  # noqa: PLC0415

    if not tracker.authorized(request.headers.get("Authorization")):
        tracker.unauthorized()
        return web.Response(status=401, text="missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    try:
        with intake.serving(request):
            if request.content_length is not None and request.content_length > MAX_BATCH_BYTES:
                raise web.HTTPRequestEntityTooLarge(MAX_BATCH_BYTES, request.content_length)
            results = await tracker.batch(await intake.read(request, MAX_BATCH_BYTES))
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text=f"a batch must be at most {MAX_BATCH_BYTES} bytes")
    except TimeoutError:
        return web.Response(status=408, text="the body did not arrive in time")
    except OSError:
        return web.Response(status=499, text="the connection closed before the body arrived")
    return web.json_response({"results": results})


async def handle_lift(tracker: Tracker, intake: Intake, keys: Callable[[], tuple],
                      request: web.Request) -> web.Response:
    """Signed ``POST <prefix>/v1/conversion/lift`` ``{"key": "GB" | "+4477..."}``: the listener
    lifts that block; 200 ``{"lifted": bool}``. Signed like a send (``signing``, ``keys``: the
    verifier keys)."""
    from aiohttp import web  # noqa: PLC0415

    from . import signing  # noqa: PLC0415

    try:
        with intake.serving(request):
            if request.content_length is not None and request.content_length > MAX_LIFT_BODY:
                raise web.HTTPRequestEntityTooLarge(MAX_LIFT_BODY, request.content_length)
            raw = await intake.read(request, MAX_LIFT_BODY)
    except web.HTTPRequestEntityTooLarge:
        return _problem(web, 413, "Payload too large", f"the body must be at most {MAX_LIFT_BODY} bytes")
    except TimeoutError:
        return _problem(web, 408, "Request timeout", "the body did not arrive in time")
    except OSError:
        return _problem(web, 499, "Client closed request", "the connection closed before the body arrived")
    verdict = signing.verify(keys(), request.headers.get("X-Otp-Timestamp"),
                             request.headers.get("X-Otp-Signature"), raw, time.time())
    if isinstance(verdict, signing.Failure):
        return _problem(web, 401, "Unauthorized", "missing, invalid or expired signature")
    key = lift_key(raw)
    if key is None:
        return _problem(web, 422, "Invalid request", f"'key' must be a country (GB) or a number prefix "
                        f"(+4477), at most {MAX_LIFT_KEY} characters")
    lifted = bool(await tracker.listener.lift(key, time.time()))
    log.info("conversion block lift", extra={"lifted": lifted})
    return web.json_response({"lifted": lifted})


def _problem(web: Any, status: int, title: str, detail: str) -> Any:
    from .problems import CONTENT_TYPE, Problem  # noqa: PLC0415

    return web.Response(status=status, body=Problem(status, title, detail).body(""),
                        headers={"Content-Type": CONTENT_TYPE})
