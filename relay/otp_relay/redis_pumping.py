"""The conversion rule (``pumping.py``) with its records in the shared store, so every replica
sees the same keys, outcomes and blocks.

Maturing sends, deciding and starting a block is one Lua script (``_MATURE``), so two replicas
never count a send twice or both start a block past the share cap. Every record expires or is
bounded: pending sends (a sorted set by due time, at most ``max_pending``, each record expiring
an hour after it is due), tracked keys (a sorted set by last use, at most ``max_keys``; each
key's record also expires after two days unused), minute buckets of the reference (61 minutes),
blocks (at their end) and repeat levels (``clean_after`` after their block ends). Those TTLs
are relative and only bound memory: every decision compares the times stored in the records
with the caller's ``now``. All names
share the channel's hash tag. The scripts build record names from that tag, so on a Redis
Cluster they stay on one shard.

If the store does not answer, ``check`` allows (the claim that follows fails closed anyway),
``sent`` and ``converted`` drop what they were told, ``summary`` says ``"error"``, and ``lift``
raises ``StateUnavailable`` (the signed lift call should answer 503: nothing was lifted).
"""

from __future__ import annotations

import logging
from typing import Any

from .outcomes import Allowed, Blocked, Gate, Sent
from .pumping import REFERENCE_SECONDS, RuleMetrics, RuleSettings, _summary, allowed, kind_of, prefix_key
from .redis_state import Scripts
from .state import StateUnavailable

log = logging.getLogger("otp_relay.pumping")

# Helpers shared by the scripts. P: the key prefix (ARGV[1]).
_COMMON = """
local P = ARGV[1]
local function hour_sends(h, n, m, now)
  local index = math.floor(now / 3600000)
  local elapsed = (now % 3600000) / 3600000
  h, n, m = tonumber(h) or -1, tonumber(n) or 0, tonumber(m) or 0
  if index == h then return n + m * (1 - elapsed) end
  if index == h + 1 then return n * (1 - elapsed) end
  return 0
end
local function count_hour(name, now)
  local index = math.floor(now / 3600000)
  local v = redis.call('HMGET', name, 'h', 'n', 'm')
  local h, n = tonumber(v[1]) or -1, tonumber(v[2]) or 0
  if h == index then
    redis.call('HINCRBY', name, 'n', 1)
  elseif h + 1 == index then
    redis.call('HSET', name, 'h', index, 'n', 1, 'm', n)
  else
    redis.call('HSET', name, 'h', index, 'n', 1, 'm', 0)
  end
end
"""

# ARGV: P, message id, prefix key, country, sent at ms, due ms, max pending, max keys, window
_SENT = _COMMON + """
local now = tonumber(ARGV[5])
for _, key in ipairs({ARGV[3], ARGV[4]}) do
  local untl = tonumber(redis.call('HGET', P .. 'b:' .. key, 'u'))
  if untl and untl > now then return 0 end
end
local pend = P .. 'p:' .. ARGV[2]
redis.call('HSET', pend, 'k', ARGV[3], 'c', ARGV[4], 'd', ARGV[6], 'v', 0)
redis.call('PEXPIRE', pend, tonumber(ARGV[6]) - now + 3600000)
redis.call('ZADD', P .. 'due', ARGV[6], ARGV[2])
local extra = redis.call('ZCARD', P .. 'due') - tonumber(ARGV[7])
if extra > 0 then
  for _, id in ipairs(redis.call('ZPOPMIN', P .. 'due', extra)) do
    redis.call('DEL', P .. 'p:' .. id)
  end
end
count_hour(P .. 'ch', now)
redis.call('PEXPIRE', P .. 'ch', 7200000)
for _, key in ipairs({ARGV[3], ARGV[4]}) do
  local name = P .. 'k:' .. key
  count_hour(name, now)
  redis.call('PEXPIRE', name, 172800000)
  redis.call('ZADD', P .. 'keys', now, key)
end
local over = redis.call('ZCARD', P .. 'keys') - tonumber(ARGV[8])
if over > 0 then
  local evicted = redis.call('ZPOPMIN', P .. 'keys', over)
  for i = 1, #evicted, 2 do
    redis.call('DEL', P .. 'k:' .. evicted[i])
    redis.call('ZREM', P .. 'worst', evicted[i])
  end
end
return 1
"""

# ARGV: P, message id, now ms
_CONVERTED = """
local pend = ARGV[1] .. 'p:' .. ARGV[2]
local due = tonumber(redis.call('HGET', pend, 'd'))
if due and tonumber(ARGV[3]) <= due then redis.call('HSET', pend, 'v', 1) end
return 1
"""

# ARGV: P, now ms, mode ('enforce'|'monitor'), min sample, window, ratio, floor, block ms,
#       max block ms, clean after ms, max blocked share (fraction), allow (comma list),
#       batch, then the keys to look up ('' for none: summary)
# Returns {new blocks as key,enforced pairs..., '|', looked-up block: key, until, enforced}
_MATURE = _COMMON + """
local now = tonumber(ARGV[2])
local enforce = ARGV[3] == 'enforce'
local min_sample, window = tonumber(ARGV[4]), tonumber(ARGV[5])
local ratio, floor = tonumber(ARGV[6]), tonumber(ARGV[7])
local block_ms, max_block, clean_after = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local share = tonumber(ARGV[11])
local allow = {}
for entry in string.gmatch(ARGV[12], '[^,]+') do allow[#allow + 1] = entry end
local function allowed(key, country)
  for _, a in ipairs(allow) do
    if a == key or a == country then return true end
    if string.sub(a, 1, 1) == '+' and string.sub(key, 1, #a) == a then return true end
  end
  return false
end
local due = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, tonumber(ARGV[13]))
local touched, order = {}, {}
for _, id in ipairs(due) do
  redis.call('ZREM', P .. 'due', id)
  local pend = P .. 'p:' .. id
  local v = redis.call('HMGET', pend, 'k', 'c', 'd', 'v')
  redis.call('DEL', pend)
  local explained = false
  if v[1] then
    for _, key in ipairs({v[1], v[2]}) do
      local untl = tonumber(redis.call('HGET', P .. 'b:' .. key, 'u'))
      if untl and untl > now then explained = true end
    end
  end
  if v[1] and not explained then
    local outcome = tonumber(v[4]) or 0
    local bucket = P .. 'm:' .. math.floor(tonumber(v[3]) / 60000)
    redis.call('HINCRBY', bucket, 's', 1)
    redis.call('HINCRBY', bucket, 'c', outcome)
    redis.call('HINCRBY', bucket, 's:' .. v[2], 1)
    redis.call('HINCRBY', bucket, 'c:' .. v[2], outcome)
    redis.call('PEXPIRE', bucket, 3660000)
    for _, key in ipairs({v[1], v[2]}) do
      local name = P .. 'k:' .. key
      if redis.call('EXISTS', name) == 1 then
        local ring = (redis.call('HGET', name, 'r') or '') .. tostring(outcome)
        if #ring > window then ring = string.sub(ring, #ring - window + 1) end
        redis.call('HSET', name, 'r', ring)
        if not touched[key] then order[#order + 1] = key end
        touched[key] = v[2]
      end
    end
  end
end
local reference = nil
local function reference_of(leave_out)
  if not reference then
    reference = {s = 0, c = 0, by = {}}
    local last = math.floor(now / 60000)
    for minute = last - 60, last do
      local all = redis.call('HGETALL', P .. 'm:' .. minute)
      for i = 1, #all, 2 do
        local f, n = all[i], tonumber(all[i + 1])
        if f == 's' then reference.s = reference.s + n
        elseif f == 'c' then reference.c = reference.c + n
        else reference.by[f] = (reference.by[f] or 0) + n end
      end
    end
  end
  if leave_out then
    return reference.c - (reference.by['c:' .. leave_out] or 0), reference.s - (reference.by['s:' .. leave_out] or 0)
  end
  return reference.c, reference.s
end
local created, active = {}, nil
if #order > 0 then
  redis.call('ZREMRANGEBYSCORE', P .. 'blocks', '-inf', now)
end
for _, key in ipairs(order) do
  local country = touched[key]
  local name = P .. 'k:' .. key
  local ring = redis.call('HGET', name, 'r') or ''
  local sent = #ring
  local _, converted = string.gsub(ring, '1', '')
  if sent >= min_sample then
    redis.call('ZADD', P .. 'worst', converted / sent, key)
  end
  local blocked = redis.call('ZSCORE', P .. 'blocks', key)
  local leave_out, needed = nil, min_sample
  if string.sub(key, 1, 1) ~= '+' then leave_out, needed = key, window end
  if sent >= needed and not blocked and not allowed(key, country) then
    local rc, rs = reference_of(leave_out)
    if rs >= min_sample and rc / rs >= floor and converted / sent < ratio * (rc / rs) then
      local h = redis.call('HMGET', name, 'h', 'n', 'm')
      local held = hour_sends(h[1], h[2], h[3], now) * converted / sent
      local c = redis.call('HMGET', P .. 'ch', 'h', 'n', 'm')
      local cc, cs = reference_of(nil)
      local channel = hour_sends(c[1], c[2], c[3], now) * cc / cs
      if not active then
        active = 0
        for _, other in ipairs(redis.call('ZRANGE', P .. 'blocks', 0, -1)) do
          active = active + (tonumber(redis.call('HGET', P .. 'b:' .. other, 'd')) or 0)
        end
      end
      if active + held <= share * channel then
        active = active + held
        local level = 1
        local seen = redis.call('HMGET', P .. 'l:' .. key, 'l', 'f')
        if seen[1] and tonumber(seen[2]) > now then level = tonumber(seen[1]) + 1 end
        local until_ms = now + math.min(max_block, block_ms * 2 ^ (level - 1))
        local b = P .. 'b:' .. key
        redis.call('HSET', b, 'u', until_ms, 'e', enforce and 1 or 0, 'l', level, 'd', tostring(held))
        redis.call('PEXPIRE', b, until_ms - now)
        redis.call('ZADD', P .. 'blocks', until_ms, key)
        redis.call('HSET', P .. 'l:' .. key, 'l', level, 'f', until_ms + clean_after)
        redis.call('PEXPIRE', P .. 'l:' .. key, until_ms - now + clean_after)
        redis.call('HSET', name, 'r', '')
        redis.call('ZREM', P .. 'worst', key)
        if not leave_out and redis.call('EXISTS', P .. 'k:' .. country) == 1 then
          redis.call('HSET', P .. 'k:' .. country, 'r', '')
        end
        created[#created + 1] = key
        created[#created + 1] = enforce and '1' or '0'
      end
    end
  end
end
created[#created + 1] = '|'
for i = 14, #ARGV do
  if ARGV[i] ~= '' then
    local v = redis.call('HMGET', P .. 'b:' .. ARGV[i], 'u', 'e')
    if v[1] and tonumber(v[1]) > now then
      created[#created + 1] = ARGV[i]
      created[#created + 1] = v[1]
      created[#created + 1] = v[2]
      break
    end
  end
end
return created
"""

# ARGV: P, key, now ms -> 1 when an active block was lifted
_LIFT = """
local P, key, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local untl = tonumber(redis.call('HGET', P .. 'b:' .. key, 'u'))
redis.call('DEL', P .. 'b:' .. key, P .. 'l:' .. key)
redis.call('ZREM', P .. 'blocks', key)
redis.call('ZREM', P .. 'worst', key)
if redis.call('EXISTS', P .. 'k:' .. key) == 1 then redis.call('HSET', P .. 'k:' .. key, 'r', '') end
if untl and untl > now then return 1 end
return 0
"""

# ARGV: P, now ms -> {worst: key, ring...; '|'; blocks: key, until, enforced, level...; '|';
#                    reference converted, sent}
_SUMMARY = """
local P, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, key in ipairs(redis.call('ZRANGE', P .. 'worst', 0, 9)) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('HGET', P .. 'k:' .. key, 'r') or ''
end
out[#out + 1] = '|'
for _, key in ipairs(redis.call('ZRANGEBYSCORE', P .. 'blocks', '(' .. now, '+inf')) do
  local v = redis.call('HMGET', P .. 'b:' .. key, 'u', 'e', 'l')
  if v[1] then
    out[#out + 1] = key; out[#out + 1] = v[1]; out[#out + 1] = v[2]; out[#out + 1] = v[3]
  end
end
out[#out + 1] = '|'
local s, c = 0, 0
local last = math.floor(now / 60000)
for minute = last - 60, last do
  local v = redis.call('HMGET', P .. 'm:' .. minute, 's', 'c')
  s, c = s + (tonumber(v[1]) or 0), c + (tonumber(v[2]) or 0)
end
out[#out + 1] = tostring(c)
out[#out + 1] = tostring(s)
return out
"""

MATURE_BATCH = 1000  # sends matured per call at most (bounds one script's run time)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRule:
    def __init__(self, settings: RuleSettings, client: Any, prefix: str = "",
                 metrics: RuleMetrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._scripts = Scripts(client, {"sent": _SENT, "converted": _CONVERTED, "mature": _MATURE,
                                         "lift": _LIFT, "summary": _SUMMARY})
        self._p = f"{{{prefix}}}:cv:"
        s = settings
        self._decide = [s.mode, s.min_sample, s.window, repr(s.ratio), repr(s.floor),
                        int(s.block_for * 1000), int(s.max_block * 1000), int(s.clean_after * 1000),
                        repr(s.max_blocked_share / 100), ",".join(sorted(s.allow)), MATURE_BATCH]

    async def _mature(self, now: float, lookup: tuple[str, ...] = ("",)) -> tuple[str, float, bool] | None:
        result = [_text(v) for v in await self._scripts.call(
            "mature", [], [self._p, int(now * 1000), *self._decide, *lookup])]
        split = result.index("|")
        created, found = result[:split], result[split + 1:]
        if self._metrics is not None and created:
            for i in range(0, len(created), 2):
                self._metrics.blocked(kind_of(created[i]), created[i + 1] == "1")
        if found:
            return found[0], int(found[1]) / 1000, found[2] == "1"
        return None

    async def check(self, recipient: str, country: str, now: float) -> Gate:
        prefix = prefix_key(recipient, self.settings.prefix_digits)
        try:
            found = await self._mature(now, ("",) if allowed(self.settings, prefix, country) else (prefix, country))
        except StateUnavailable as exc:
            log.warning("conversion rule: the state store did not answer (%s); allowed", exc)
            return Allowed()
        if found is None:
            return Allowed()
        return Blocked(*found)

    async def sent(self, sent: Sent) -> None:
        s = self.settings
        at = int(sent.at * 1000)
        prefix = prefix_key(sent.recipient, s.prefix_digits)
        if allowed(s, prefix, sent.country):
            return
        try:
            await self._scripts.call("sent", [], [
                self._p, sent.message_id, prefix, sent.country,
                at, at + int(s.maturity * 1000), s.max_pending, s.max_keys, s.window])
        except StateUnavailable as exc:
            log.warning("conversion rule: the state store did not answer (%s); send not counted", exc)

    async def converted(self, message_id: str, now: float) -> None:
        try:
            await self._scripts.call("converted", [], [self._p, message_id, int(now * 1000)])
        except StateUnavailable as exc:
            log.warning("conversion rule: the state store did not answer (%s); conversion lost", exc)

    async def lift(self, key: str, now: float) -> bool:
        lifted = bool(int(await self._scripts.call("lift", [], [self._p, key, int(now * 1000)])))
        await self._publish(now)
        return lifted

    async def summary(self, now: float) -> dict[str, Any]:
        try:
            await self._mature(now)
            result = [_text(v) for v in await self._scripts.call("summary", [], [self._p, int(now * 1000)])]
        except StateUnavailable:
            return {"mode": self.settings.mode, "prefixes": [], "blocks": [], "error": "state store unavailable"}
        first = result.index("|")
        second = result.index("|", first + 1)
        worst, blocks, reference = result[:first], result[first + 1:second], result[second + 1:]
        rows = [(worst[i], len(worst[i + 1]), worst[i + 1].count("1")) for i in range(0, len(worst), 2)]
        active = [(blocks[i], int(blocks[i + 1]) / 1000, blocks[i + 2] == "1", int(blocks[i + 3]))
                  for i in range(0, len(blocks), 4)]
        if self._metrics is not None:
            self._metrics.active({kind: sum(1 for b in active if kind_of(b[0]) == kind)
                                  for kind in ("prefix", "country")})
        return _summary(self.settings, rows, active, (float(reference[0]), float(reference[1])))

    async def _publish(self, now: float) -> None:
        if self._metrics is not None:
            await self.summary(now)


__all__ = ["REFERENCE_SECONDS", "RedisRule"]
