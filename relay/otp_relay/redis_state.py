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

from pathlib import Path

import redis.asyncio as redis
from redis.credentials import CredentialProvider
from redis.exceptions import RedisError

from .config import Rate
from .state import (
    ACCEPTED, RELEASE, InFlight, Limited, Proceed, Replay, StateUnavailable, Timing, Unknown,
    Verdict, recipient_tag,
)

# KEYS: idempotency record, recipient window (sorted set), global bucket (hash)
# ARGV: retention ms, in-flight ms, recipient limit, window ms, bucket capacity,
#       bucket tokens per ms, a unique member for the window
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
local capacity, per_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local bucket = redis.call('HMGET', KEYS[3], 't', 'ts')
local tokens, updated = tonumber(bucket[1]) or capacity, tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * per_ms)
if tokens < 1 then return {'global', tostring((1 - tokens) / per_ms)} end
local window = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'recipient', tostring(tonumber(oldest[2]) + window - now)}
end
redis.call('HSET', KEYS[3], 't', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[3], math.ceil(capacity / per_ms) + 1000)
redis.call('ZADD', KEYS[2], now, ARGV[7])
redis.call('PEXPIRE', KEYS[2], window)
redis.call('HSET', KEYS[1], 's', 'p', 'd', tostring(now + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {'proceed', '0'}
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


class RedisState:
    scope = "shared"

    def __init__(self, url: str, password_file: Path | None, prefix: str, per_recipient: Rate,
                 global_limit: Rate, timing: Timing, timeout: float = 1.0) -> None:
        self._client = redis.Redis.from_url(
            url, credential_provider=PasswordFile(password_file) if password_file else None,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            max_connections=256, decode_responses=True)
        self._claim = self._client.register_script(_CLAIM)
        self._settle = self._client.register_script(_SETTLE)
        self._prefix = f"{{{prefix}}}:"
        self._timing_ms = (int(timing.retention * 1000), int(timing.in_flight * 1000))
        self._recipient = (per_recipient.limit, int(per_recipient.window * 1000))
        self._bucket = (global_limit.limit, global_limit.limit / (global_limit.window * 1000))

    async def claim(self, key: str, recipient: str, request_id: str) -> Verdict:
        keys = [self._prefix + "k:" + key, self._prefix + "r:" + recipient_tag(recipient),
                self._prefix + "global"]
        args = [*self._timing_ms, *self._recipient, *self._bucket, request_id]
        try:
            kind, value = await self._claim(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(type(exc).__name__) from None
        if kind == "proceed":
            return Proceed()
        if kind == "replay":
            return Replay(value)
        if kind == "unknown":
            return Unknown()
        if kind == "inflight":
            return InFlight(float(value) / 1000)
        return Limited(kind, float(value) / 1000)

    async def settle(self, key: str, outcome: str, umid: str = "") -> None:
        state = {RELEASE: "r", ACCEPTED: "a"}.get(outcome, "u")
        try:
            await self._settle(keys=[self._prefix + "k:" + key], args=[state, umid, self._timing_ms[0]])
        except (RedisError, OSError) as exc:
            raise StateUnavailable(type(exc).__name__) from None

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
