"""``State`` shared through Redis (or Valkey): exact across replicas and restarts.

Each decision is one server-side Lua script, so two replicas can never both take the last
token or both claim a key. The clock is the server's (``TIME``), so replicas' clocks do not
matter. Every key has a TTL (idempotency keys: the retention; windows: their length; the
bucket: its refill time), so memory is bounded by the traffic the limits admit. All keys of
one channel share a hash tag, so the scripts also run on a Redis Cluster shard.

Any failure to get an answer (unreachable, timeout, out of memory) raises
``StateUnavailable``: the relay then refuses the send (fails closed).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.credentials import CredentialProvider
from redis.exceptions import NoScriptError, RedisError

from .config import Rate
from .policy import Window
from .state import (
    ACCEPTED,
    RELEASE,
    InFlight,
    Limited,
    MaybeSent,
    Proceed,
    Replay,
    StateUnavailable,
    Timing,
    Verdict,
    recipient_limit,
    recipient_tag,
)

# KEYS: idempotency record, recipient window (sorted set), global bucket (hash), then one hash
#       per policy window ({i: window index, n: units})
# ARGV: retention ms, in-flight ms, recipient limit, window ms, bucket capacity,
#       bucket tokens per ms, a unique member for the window, cost (bucket units), user limits
#       (1/0: 0 for the canary, neither refused nor counted by the bucket and recipient window),
#       then per policy window: rule, limit, length ms, cost, monitor (1/0)
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local record = redis.call('HMGET', KEYS[1], 's', 'v', 'd')
if record[1] then
  if record[1] == 'a' then return {'replay', record[2]} end
  if record[1] == 'u' then return {'unknown', '0'} end
  local until_ms = tonumber(record[3])
  if now < until_ms then return {'inflight', tostring(until_ms - now)} end
  redis.call('HSET', KEYS[1], 's', 'u')
  return {'unknown', '0'}
end
local capacity, per_ms, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
local user = ARGV[9] == '1'
local tokens, window = 0, tonumber(ARGV[4])
if user then
  local bucket = redis.call('HMGET', KEYS[3], 't', 'ts')
  local updated = tonumber(bucket[2]) or now
  tokens = tonumber(bucket[1]) or capacity
  tokens = math.min(capacity, tokens + math.max(0, now - updated) * per_ms)
  if tokens < cost then return {'global', tostring((cost - tokens) / per_ms)} end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {'recipient', tostring(tonumber(oldest[2]) + window - now)}
  end
end
local would = {}
for i = 4, #KEYS do
  local a = 10 + (i - 4) * 5
  local limit, length, units = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local index = math.floor(now / length)
  local seen = redis.call('HMGET', KEYS[i], 'i', 'n')
  local used = 0
  if tonumber(seen[1]) == index then used = tonumber(seen[2]) end
  if used + units > limit then
    if ARGV[a + 4] ~= '1' then return {ARGV[a], tostring((index + 1) * length - now)} end
    would[#would + 1] = ARGV[a]
  end
end
if user then
  redis.call('HSET', KEYS[3], 't', tostring(tokens - cost), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[3], math.ceil(capacity / per_ms) + 1000)
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[2], window)
end
for i = 4, #KEYS do
  local a = 10 + (i - 4) * 5
  local length, units = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local index = math.floor(now / length)
  if tonumber(redis.call('HGET', KEYS[i], 'i')) == index then
    redis.call('HINCRBY', KEYS[i], 'n', units)
  else
    redis.call('HSET', KEYS[i], 'i', index, 'n', units)
  end
  redis.call('PEXPIRE', KEYS[i], (index + 1) * length - now + 1000)
end
redis.call('HSET', KEYS[1], 's', 'p', 'd', tostring(now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {'proceed', table.concat(would, ',')}
"""

# KEYS: idempotency record; ARGV: 'a' | 'u' | 'r', umid, retention ms
_SETTLE = """
if ARGV[1] == 'r' then return redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'v', ARGV[2])
return redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


class PasswordFile(CredentialProvider):
    """The password, read from its file at every new connection (a rotated Secret is used
    without a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_credentials(self) -> tuple[str]:
        return (self.path.read_text(encoding="utf-8").strip(),)


class Scripts:
    """Runs the Lua scripts; the calls made in one event-loop turn (concurrent requests) go to
    Redis together as one pipeline: one round trip and one pooled connection for all of them,
    which is most of redis-py's CPU per call. Each call is still its own atomic script, so
    exactness is unchanged; every caller still waits for its own answer."""

    def __init__(self, client: redis.Redis, sources: dict[str, str]) -> None:
        self._client = client
        self._sources = sources
        self._shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in sources.items()}
        self._queue: list[tuple[str, list, list, asyncio.Future]] = []
        self._running: set[asyncio.Task] = set()

    def call(self, name: str, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if not self._queue:
            loop.call_soon(self._flush)
        future = loop.create_future()
        self._queue.append((name, keys, args, future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[str, list, list, asyncio.Future]]) -> None:
        results: list = [StateUnavailable("cancelled")] * len(batch)
        try:
            results = await self._execute(batch)
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:  # the server lost its script cache (restart, failover): load, run those again
                for source in self._sources.values():
                    await self._client.script_load(source)
                for i, result in zip(missing, await self._execute([batch[i] for i in missing])):
                    results[i] = result
        except Exception as exc:  # noqa: BLE001  whatever it is, the store did not decide: fail closed
            results = [exc] * len(batch)
        finally:
            for (_, _, _, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(StateUnavailable(type(result).__name__))
                else:
                    future.set_result(result)

    async def _execute(self, batch: list[tuple[str, list, list, asyncio.Future]]) -> list:
        if len(batch) == 1:
            name, keys, args, _ = batch[0]
            try:
                return [await self._client.evalsha(self._shas[name], len(keys), *keys, *args)]
            except NoScriptError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=False)
        for name, keys, args, _ in batch:
            pipe.evalsha(self._shas[name], len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)


class RedisState:
    scope = "shared"

    def __init__(self, url: str, password_file: Path | None, prefix: str, per_recipient: Rate,
                 global_limit: Rate, timing: Timing, timeout: float = 1.0,
                 ca_file: Path | None = None, voice_per_recipient: Rate | None = None) -> None:
        tls: dict[str, Any] = {}
        if url.startswith("rediss://"):  # the certificate and the host name are always checked
            tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if ca_file is not None:
                tls["ssl_ca_certs"] = str(ca_file)
        self._client = redis.Redis.from_url(
            url, credential_provider=PasswordFile(password_file) if password_file else None,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            max_connections=256, decode_responses=True, **tls)
        self._scripts = Scripts(self._client, {"claim": _CLAIM, "settle": _SETTLE})
        self._prefix = f"{{{prefix}}}:"
        self._timing_ms = (int(timing.retention * 1000), int(timing.in_flight * 1000))
        voice = voice_per_recipient or per_recipient
        # per delivery: the key prefix of its recipient windows and their (limit, window ms);
        # the same script counts both, in separate sorted sets
        self._recipient = {"text": ("r:", per_recipient.limit, int(per_recipient.window * 1000)),
                           "voice": ("rv:", voice.limit, int(voice.window * 1000))}
        self._bucket = (global_limit.limit, global_limit.limit / (global_limit.window * 1000))

    async def claim(self, key: str, recipient: str, request_id: str, cost: int = 1,
                    windows: tuple[Window, ...] = (), user_limits: bool = True,
                    delivery: str = "text") -> Verdict:
        window_prefix, *recipient_rate = self._recipient[delivery]
        keys = [self._prefix + "k:" + key, self._prefix + window_prefix + recipient_tag(recipient),
                self._prefix + "global"]
        args = [*self._timing_ms, *recipient_rate, *self._bucket, request_id, cost,
                1 if user_limits else 0]
        for window in windows:
            keys.append(f"{self._prefix}w:{window.rule}:{window.tag}")
            args += [window.rule, window.limit, int(window.seconds * 1000), window.cost,
                     1 if window.monitor else 0]
        kind, value = await self._scripts.call("claim", keys, args)
        if kind == "proceed":
            return Proceed(tuple(value.split(",")) if value else ())
        if kind == "replay":
            return Replay(value)
        if kind == "unknown":
            return MaybeSent()
        if kind == "inflight":
            return InFlight(float(value) / 1000)
        return Limited(recipient_limit(delivery) if kind == "recipient" else kind, float(value) / 1000)

    async def settle(self, key: str, outcome: str, umid: str = "") -> None:
        state = {RELEASE: "r", ACCEPTED: "a"}.get(outcome, "u")
        await self._scripts.call("settle", [self._prefix + "k:" + key], [state, umid, self._timing_ms[0]])

    @property
    def client(self) -> redis.Redis:
        """The connection pool, for other shared records (delivery receipts)."""
        return self._client

    async def check(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._client.aclose()
