"""The conversion rule against SMS pumping: block a number prefix or a country whose codes are
not being used while the channel's are.

A pumping ring owns the numbers it triggers codes for (it is paid per SMS delivered) and never
logs in, so what tells it apart from real users is conversion, not volume. The rule is told of
every accepted send (``sent``) and every used code (``converted``, from the tracker in
``conversion.py``); a send that was not converted ``maturity`` seconds after it went out counts
as not converted (a real user types the code within tens of seconds, a pump never does). Each
key (the recipient's country, and its number without the last ``prefix_digits`` digits) keeps
its last ``window`` matured outcomes; once it holds ``min_sample`` of them (a country: a full
window, and a prefix block clears its country's) and their conversion
is below ``ratio`` x the channel's own over the last hour (for a country: the rest of the
channel's), the key is blocked for ``block_for``, doubling on each repeat up to ``max_block``
(the repeat count is forgotten after ``clean_after`` without a block).

Safety rails: nothing is blocked while the reference conversion is under ``floor`` (a broken
log stream or an Auth0 outage makes every code look unused); the keys blocked at once may hold
at most ``max_blocked_share`` percent of the last hour's sends; the ``allow`` list (countries,
E.164 prefixes) is never blocked; ``monitor`` mode records the same blocks without refusing.

Only the country and the prefix are kept, never the number. ``MemoryRule`` decides for one
process; ``RedisRule`` keeps the same records in the shared store (every record expires; the
steps two replicas could race on are Lua scripts) so replicas agree. ``now`` is always the
caller's (epoch seconds): replicas' clocks are assumed NTP-synchronised.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from .durations import parse_duration
from .outcomes import Allowed, Blocked, ConversionListener, Gate, NoRule, Sent

MODES = ("off", "monitor", "enforce")
KINDS = ("prefix", "country")
MAX_ALLOW = 100
REFERENCE_SECONDS = 3600  # the channel's conversion is taken over the last hour of matured sends
_MINUTE = 60
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")


class SettingError(ValueError):
    """A rule setting is wrong; ``field`` is the ``RuleSettings`` field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RuleSettings:
    """Defaults and why: relay/README.md, "Conversion rule" (figures from bench/fraud)."""

    mode: str = "monitor"  # off | monitor | enforce
    min_sample: int = 10  # matured sends a key needs before it can be blocked (>= 5)
    window: int = 50  # matured sends remembered per key
    prefix_digits: int = 4  # digits dropped from the E.164 number: a key covers 10,000 numbers
    maturity: float = 45.0  # seconds after which an unconverted send counts as not converted
    ratio: float = 0.25  # blocked below this share of the reference conversion
    floor: float = 0.2  # reference conversion under which nothing is blocked
    block_for: float = 3600.0  # the first block; doubles on each repeat
    max_block: float = 86400.0
    clean_after: float = 86400.0  # a key not blocked for this long starts again at the first level
    max_blocked_share: int = 25  # percent of the last hour's converting sends blocked keys may hold
    allow: frozenset[str] = frozenset()  # countries ("GB") and E.164 prefixes ("+4477")
    max_keys: int = 20_000  # keys tracked at once (least recently used evicted)
    max_pending: int = 100_000  # sends awaiting maturity (oldest dropped uncounted)

    def __post_init__(self) -> None:
        _validate(self)


def _validate(s: RuleSettings) -> None:
    if s.mode not in MODES:
        raise SettingError("mode", f"conversion blocking mode must be one of {', '.join(MODES)}, got {s.mode!r}")
    if s.min_sample < 5:
        raise SettingError("min_sample", f"conversion minimum sample must be at least 5, got {s.min_sample}")
    if s.window < s.min_sample:
        raise SettingError("window", f"conversion window ({s.window}) must hold the minimum sample ({s.min_sample})")
    if not 1 <= s.prefix_digits <= 8:
        raise SettingError("prefix_digits", f"conversion prefix digits must be 1-8, got {s.prefix_digits}")
    if not 5 <= s.maturity < 900:
        raise SettingError("maturity", f"conversion maturity must be 5 s to under 15 m, got {s.maturity}")
    if not 0 < s.ratio < 1:
        raise SettingError("ratio", f"conversion ratio must be between 0 and 1, got {s.ratio}")
    if not 0 <= s.floor < 1:
        raise SettingError("floor", f"conversion floor must be in [0, 1), got {s.floor}")
    if s.block_for < 300:
        raise SettingError("block_for", f"conversion block duration must be at least 5m, got {s.block_for:g} s")
    if s.max_block < s.block_for:
        raise SettingError("max_block", "conversion maximum block must be at least the block duration")
    if not 1 <= s.max_blocked_share <= 100:
        raise SettingError("max_blocked_share",
                           f"conversion max blocked share must be 1-100 (percent), got {s.max_blocked_share}")
    if len(s.allow) > MAX_ALLOW:
        raise SettingError("allow", f"conversion allow list holds at most {MAX_ALLOW} entries, got {len(s.allow)}")
    for entry in s.allow:
        if not (_COUNTRY.match(entry) or _PREFIX.match(entry)):
            raise SettingError("allow", f"conversion allow entry {entry!r} is neither an ISO country (GB) "
                               "nor an E.164 prefix (+4477)")
    if s.max_keys < 1 or s.max_pending < 1:
        raise SettingError("max_keys", "conversion max keys and max pending must be positive")


def parse_settings(mode: str = "monitor", allow: str = "", min_sample: str | None = None,
                   block_for: str | None = None, max_blocked_share: str | None = None,
                   **overrides: Any) -> RuleSettings:
    """The rule's settings from the relay's ``OTP_RELAY_CONVERSION_*`` values (strings; None or
    "" = the default); SettingError names the setting that is wrong."""
    values: dict[str, Any] = {"mode": (mode or "monitor").strip().lower()}
    entries = [e.strip() for e in (allow or "").split(",") if e.strip()]
    values["allow"] = frozenset(e.upper() if _COUNTRY.match(e.upper()) else e for e in entries)
    if min_sample:
        values["min_sample"] = _integer("min_sample", "OTP_RELAY_CONVERSION_MIN_SAMPLE", min_sample)
    if block_for:
        try:
            values["block_for"] = float(parse_duration(block_for.strip()))
        except ValueError as exc:
            raise SettingError("block_for", f"OTP_RELAY_CONVERSION_BLOCK_FOR: {exc}") from None
        values["max_block"] = max(RuleSettings.max_block, values["block_for"])
    if max_blocked_share:
        values["max_blocked_share"] = _integer("max_blocked_share", "OTP_RELAY_CONVERSION_MAX_BLOCKED_SHARE",
                                               max_blocked_share.strip().rstrip("%"))
    values.update(overrides)
    if values.get("window") is None and values.get("min_sample", 0) > RuleSettings.window:
        values["window"] = values["min_sample"]
    return RuleSettings(**values)


def _integer(field: str, name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise SettingError(field, f"{name} must be a whole number, got {text!r}") from None


def prefix_key(recipient: str, digits: int) -> str:
    """The number without its last ``digits`` digits (what is kept of it)."""
    return recipient[:-digits] if len(recipient) > digits + 2 else recipient


def kind_of(key: str) -> str:
    return "prefix" if key.startswith("+") else "country"


def allowed(settings: RuleSettings, key: str, country: str) -> bool:
    if country in settings.allow or key in settings.allow:
        return True
    return key.startswith("+") and any(key.startswith(a) for a in settings.allow if a.startswith("+"))


def block_seconds(settings: RuleSettings, level: int) -> float:
    return min(settings.max_block, settings.block_for * 2 ** (level - 1))


def _rate(converted: float, sent: float) -> float | None:
    return converted / sent if sent else None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def sample_needed(settings: RuleSettings, key: str) -> int:
    """Matured sends a key needs: a country, the heavier block, a full window (so a pumped
    prefix, which needs only the minimum sample, is blocked first and explains the evidence)."""
    return settings.min_sample if key.startswith("+") else settings.window


def far_below(settings: RuleSettings, sample: tuple[int, int], reference: tuple[float, float],
              needed: int | None = None) -> bool:
    """Whether a key's (converted, sent) is blocked against the reference (converted, sent)."""
    converted, sent = sample
    if sent < (settings.min_sample if needed is None else needed):
        return False
    ref_converted, ref_sent = reference
    if ref_sent < settings.min_sample:
        return False  # too little of the channel matured to compare against
    ref = ref_converted / ref_sent
    if ref < settings.floor:
        return False
    return converted / sent < settings.ratio * ref


def hour_sends(current: float, previous: float, now: float) -> float:
    """Sends of the last hour from two fixed hour windows (the previous one weighted by how
    much of it the last hour still covers)."""
    elapsed = (now % REFERENCE_SECONDS) / REFERENCE_SECONDS
    return current + previous * (1 - elapsed)


class RuleMetrics:
    """``otp_relay_conversion_blocks_total{kind,mode}`` and ``_blocks_active{kind}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        total = Counter("otp_relay_conversion_blocks", "Conversion blocks started (mode monitor: "
                        "recorded, never refused)", ["kind", "mode"], registry=registry)
        self._total = {(k, m): total.labels(k, m) for k in KINDS for m in ("monitor", "enforce")}
        active = Gauge("otp_relay_conversion_blocks_active", "Conversion blocks in force",
                       ["kind"], registry=registry)
        self._active = {k: active.labels(k) for k in KINDS}

    def blocked(self, kind: str, enforced: bool) -> None:
        self._total[kind, "enforce" if enforced else "monitor"].inc()

    def active(self, counts: dict[str, int]) -> None:
        for kind, child in self._active.items():
            child.set(counts.get(kind, 0))


def _summary(settings: RuleSettings, rows: list[tuple[str, int, int]],
             blocks: list[tuple[str, float, bool, int]], reference: tuple[float, float]) -> dict[str, Any]:
    worst = sorted((r for r in rows if r[1] >= settings.min_sample), key=lambda r: (r[2] / r[1], -r[1]))
    return {
        "mode": settings.mode,
        "prefixes": [{"key": k, "sent": n, "converted": c, "rate": round(c / n, 4)} for k, n, c in worst[:10]],
        "blocks": [{"key": k, "kind": kind_of(k), "until": _iso(u), "enforced": e, "level": lv}
                   for k, u, e, lv in sorted(blocks, key=lambda b: b[1])],
        "would_block": sum(1 for b in blocks if not b[2]),
        "blocked": sum(1 for b in blocks if b[2]),
        "reference": {"sent": int(reference[1]), "converted": int(reference[0]),
                      "rate": None if not reference[1] else round(reference[0] / reference[1], 4)},
        "settings": {"minSample": settings.min_sample, "prefixDigits": settings.prefix_digits,
                     "maturitySeconds": settings.maturity, "ratio": settings.ratio,
                     "floor": settings.floor, "blockForSeconds": settings.block_for,
                     "maxBlockedSharePercent": settings.max_blocked_share,
                     "allow": sorted(settings.allow)},
    }


# --- in process ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    prefix: str
    country: str
    due: float
    converted: bool = False


@dataclass(slots=True)
class _Key:
    ring: deque = field(default_factory=deque)  # 1 converted, 0 not, newest last
    hour: int = -1
    current: int = 0
    previous: int = 0

    def count(self, now: float) -> None:
        index = int(now // REFERENCE_SECONDS)
        if index != self.hour:
            self.previous = self.current if index == self.hour + 1 else 0
            self.current, self.hour = 0, index
        self.current += 1

    def sends(self, now: float) -> float:
        index = int(now // REFERENCE_SECONDS)
        if index == self.hour:
            return hour_sends(self.current, self.previous, now)
        return hour_sends(0, self.current if index == self.hour + 1 else 0, now)


@dataclass(slots=True)
class _Block:
    until: float
    enforced: bool
    level: int
    held: float  # the key's converting sends of the last hour when it was blocked (estimated)


_NOT_BLOCKED = _Block(0.0, False, 0, 0.0)


class MemoryRule:
    """The rule for one process; memory bounded by ``max_keys`` and ``max_pending``."""

    def __init__(self, settings: RuleSettings, metrics: RuleMetrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._pending: OrderedDict[str, _Pending] = OrderedDict()  # send order = due order
        self._keys: OrderedDict[str, _Key] = OrderedDict()  # least recently used first
        self._blocks: dict[str, _Block] = {}
        self._levels: dict[str, tuple[int, float]] = {}  # key -> (level, forgotten at)
        self._minutes: dict[int, dict[str, list[int]]] = {}  # minute -> {"" | country: [sent, converted]}
        self._channel = _Key()

    def __len__(self) -> int:
        return len(self._keys)

    async def check(self, recipient: str, country: str, now: float) -> Gate:
        self._mature(now)
        prefix = prefix_key(recipient, self.settings.prefix_digits)
        if allowed(self.settings, prefix, country):
            return Allowed()
        for key in (prefix, country):
            block = self._blocks.get(key)
            if block is not None and block.until > now:
                return Blocked(key, block.until, block.enforced)
        return Allowed()

    async def sent(self, sent: Sent) -> None:
        self._mature(sent.at)
        prefix = prefix_key(sent.recipient, self.settings.prefix_digits)
        if allowed(self.settings, prefix, sent.country) or any(
                key in self._blocks and self._blocks[key].until > sent.at for key in (prefix, sent.country)):
            return  # not evidence: never blocked, or (monitor mode) a send enforcing would refuse
        if len(self._pending) >= self.settings.max_pending:
            self._pending.popitem(last=False)
        self._pending[sent.message_id] = _Pending(prefix, sent.country, sent.at + self.settings.maturity)
        self._channel.count(sent.at)
        for key in (prefix, sent.country):
            self._key(key).count(sent.at)

    async def converted(self, message_id: str, now: float) -> None:
        pending = self._pending.get(message_id)
        if pending is not None and now <= pending.due:
            pending.converted = True

    async def lift(self, key: str, now: float) -> bool:
        block = self._blocks.pop(key, None)
        self._levels.pop(key, None)
        state = self._keys.get(key)
        if state is not None:
            state.ring.clear()
        self._publish()
        return block is not None and block.until > now

    async def summary(self, now: float) -> dict[str, Any]:
        self._mature(now)
        rows = [(k, len(s.ring), sum(s.ring)) for k, s in self._keys.items()]
        blocks = [(k, b.until, b.enforced, b.level) for k, b in self._blocks.items() if b.until > now]
        return _summary(self.settings, rows, blocks, self._reference(now, None))

    # -- internals
    def _key(self, key: str) -> _Key:
        state = self._keys.get(key)
        if state is None:
            if len(self._keys) >= self.settings.max_keys:
                self._keys.popitem(last=False)
            state = self._keys[key] = _Key(ring=deque(maxlen=self.settings.window))
        else:
            self._keys.move_to_end(key)
        return state

    def _mature(self, now: float) -> None:
        touched: dict[str, str] = {}
        while self._pending:
            message_id, pending = next(iter(self._pending.items()))
            if pending.due > now:
                break
            del self._pending[message_id]
            if any(self._blocks.get(k, _NOT_BLOCKED).until > now for k in (pending.prefix, pending.country)):
                continue  # sent before its key was blocked: already explained, not fresh evidence
            outcome = 1 if pending.converted else 0
            minute = self._minutes.setdefault(int(pending.due // _MINUTE), {})
            for bucket in ("", pending.country):
                counts = minute.setdefault(bucket, [0, 0])
                counts[0] += 1
                counts[1] += outcome
            for key in (pending.prefix, pending.country):
                state = self._keys.get(key)
                if state is not None:
                    state.ring.append(outcome)
                    touched[key] = pending.country
        if touched:
            self._expire(now)
            for key, country in touched.items():
                self._evaluate(key, country, now)

    def _expire(self, now: float) -> None:
        oldest = int((now - REFERENCE_SECONDS) // _MINUTE)
        for minute in [m for m in self._minutes if m < oldest]:
            del self._minutes[minute]
        for key in [k for k, b in self._blocks.items() if b.until <= now]:
            del self._blocks[key]
        for key in [k for k, (_, forget) in self._levels.items() if forget <= now]:
            del self._levels[key]
        self._publish()

    def _reference(self, now: float, leave_out: str | None) -> tuple[float, float]:
        oldest = int((now - REFERENCE_SECONDS) // _MINUTE)
        sent = converted = 0
        for minute, buckets in self._minutes.items():
            if minute < oldest:
                continue
            counts = buckets.get("", (0, 0))
            sent, converted = sent + counts[0], converted + counts[1]
            if leave_out is not None and leave_out in buckets:
                sent, converted = sent - buckets[leave_out][0], converted - buckets[leave_out][1]
        return converted, sent

    def _evaluate(self, key: str, country: str, now: float) -> None:
        s = self.settings
        state = self._keys.get(key)
        if state is None or key in self._blocks or allowed(s, key, country):
            return
        reference = self._reference(now, key if kind_of(key) == "country" else None)
        if not far_below(s, (sum(state.ring), len(state.ring)), reference, sample_needed(s, key)):
            return
        held = state.sends(now) * sum(state.ring) / len(state.ring)
        active = sum(b.held for b in self._blocks.values())
        channel_converted, channel_sent = self._reference(now, None)
        if active + held > s.max_blocked_share / 100 * self._channel.sends(now) * channel_converted / channel_sent:
            return
        level = self._levels.get(key, (0, 0.0))[0] + 1
        until = now + block_seconds(s, level)
        self._blocks[key] = _Block(until, s.mode == "enforce", level, held)
        self._levels[key] = (level, until + s.clean_after)
        state.ring.clear()  # a repeat needs fresh evidence
        if kind_of(key) == "prefix" and country in self._keys:
            self._keys[country].ring.clear()  # the prefix explains its country's unused codes
        if self._metrics is not None:
            self._metrics.blocked(kind_of(key), s.mode == "enforce")
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            counts = {kind: 0 for kind in KINDS}
            for key in self._blocks:
                counts[kind_of(key)] += 1
            self._metrics.active(counts)


def build_rule(settings: RuleSettings, redis_client: Any = None, prefix: str = "",
               metrics: RuleMetrics | None = None) -> ConversionListener:
    """``NoRule`` when the mode is off; else the rule in the shared store when there is one."""
    if settings.mode == "off":
        return NoRule()
    if redis_client is not None:
        from .redis_pumping import RedisRule

        return RedisRule(settings, redis_client, prefix, metrics)
    return MemoryRule(settings, metrics)


