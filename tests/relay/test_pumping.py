"""The conversion rule (``pumping.py``): in process and in a real redis-server, on an injected
clock (every call is given ``now``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from otp_relay.outcomes import Allowed, Blocked, NoRule, Sent
from otp_relay.pumping import MemoryRule, RuleMetrics, RuleSettings, build_rule, parse_settings
from otp_relay.redis_pumping import RedisRule
from tests.fixtures.redis import RedisServer

T0 = 1_800_000_000.0  # on the hour: the hour windows of the share cap start here
PUMPED = "+44770090"  # the prefix (4 digits dropped) of +44770090xxxx
NEIGHBOUR = "+44770091"
_ids = itertools.count()


@pytest.fixture(params=["memory", "redis"])
async def make_rule(request, redis_server: RedisServer) -> AsyncIterator[Callable[..., object]]:
    clients: list[aioredis.Redis] = []

    def make(metrics: RuleMetrics | None = None, **settings: object) -> object:
        values: dict[str, object] = {"mode": "enforce", **settings}
        rule_settings = RuleSettings(**values)  # type: ignore[arg-type]
        if request.param == "memory":
            return MemoryRule(rule_settings, metrics)
        client = aioredis.Redis.from_url(redis_server.url, password=redis_server.password,
                                         decode_responses=True)
        clients.append(client)
        return RedisRule(rule_settings, client, f"test:pumping:{time.monotonic_ns()}", metrics)

    yield make
    for client in clients:
        await client.aclose()


class Traffic:
    """Sends on the injected clock: ``send`` asks ``check`` first, counts what was refused."""

    def __init__(self, rule) -> None:
        self.rule = rule
        self.refused: dict[str, int] = {}
        self.monitored: dict[str, int] = {}
        self.sent: dict[str, int] = {}

    async def send(self, recipient: str, country: str, at: float, used: bool, label: str) -> bool:
        gate = await self.rule.check(recipient, country, at)
        if isinstance(gate, Blocked) and gate.enforced:
            self.refused[label] = self.refused.get(label, 0) + 1
            return False
        if isinstance(gate, Blocked):
            self.monitored[label] = self.monitored.get(label, 0) + 1
        umid = f"umid-{next(_ids)}"
        await self.rule.sent(Sent(umid, recipient, country, at))
        self.sent[label] = self.sent.get(label, 0) + 1
        if used:
            await self.rule.converted(umid, at + 15)
        return True

    async def minute(self, start: float, *, healthy: int = 12, pumped: int = 0, neighbour: int = 0,
                     pumped_prefix: str = PUMPED, pumped_country: str = "GB",
                     healthy_used: Callable[[int], bool] = lambda i: i % 5 != 0,
                     pumped_used: Callable[[int], bool] = lambda i: False) -> None:
        """One minute of traffic: ``healthy`` SG users (80 % use their code), ``pumped`` sends to
        sequential numbers that never convert, ``neighbour`` GB users next door (all convert)."""
        events = []
        for i in range(healthy):
            events.append((start + i * 60 / max(healthy, 1), f"+659{next(_ids) % 10_000_000:07d}", "SG",
                           healthy_used(i), "healthy"))
        for i in range(pumped):
            events.append((start + i * 60 / pumped + 0.5, f"{pumped_prefix}{next(_ids) % 10_000:04d}",
                           pumped_country, pumped_used(i), "pumped"))
        for i in range(neighbour):
            events.append((start + i * 60 / neighbour + 0.7, f"{NEIGHBOUR}{next(_ids) % 10_000:04d}", "GB",
                           True, "neighbour"))
        for at, recipient, country, used, label in sorted(events):
            await self.send(recipient, country, at, used, label)


async def warm(traffic: Traffic, minutes: int = 10, start: float = T0, **kwargs) -> float:
    """Healthy traffic (the channel's reference), then the time after it."""
    for m in range(minutes):
        await traffic.minute(start + m * 60, **kwargs)
    return start + minutes * 60


async def test_enforce_blocks_the_pumped_prefix_and_not_its_healthy_neighbour(make_rule) -> None:
    traffic = Traffic(make_rule())
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20, neighbour=4)
    assert traffic.refused.get("pumped", 0) > 0
    assert traffic.sent["pumped"] <= 50  # the benchmark's target for one attacked prefix
    assert traffic.refused.get("neighbour", 0) == 0 and traffic.refused.get("healthy", 0) == 0
    gate = await traffic.rule.check(PUMPED + "1234", "GB", t + 400)
    assert isinstance(gate, Blocked) and gate.key == PUMPED and gate.enforced
    assert gate.until == pytest.approx(t + 3600, abs=400)
    summary = await traffic.rule.summary(t + 400)
    [block] = summary["blocks"]
    assert block["key"] == PUMPED and block["kind"] == "prefix" and block["level"] == 1
    assert summary["blocked"] == 1 and summary["would_block"] == 0


async def test_blocks_are_counted_and_the_summary_shows_the_worst_keys(make_rule) -> None:
    registry = CollectorRegistry()
    traffic = Traffic(make_rule(RuleMetrics(registry)))
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20, pumped_prefix="+44770080")
        await traffic.minute(t + m * 60 + 1, healthy=0, pumped=5, pumped_prefix=NEIGHBOUR,
                             pumped_used=lambda i: i % 2 == 0)
    summary = await traffic.rule.summary(t + 400)
    assert registry.get_sample_value("otp_relay_conversion_blocks_total", {"kind": "prefix", "mode": "enforce"}) == 1
    assert registry.get_sample_value("otp_relay_conversion_blocks_active", {"kind": "prefix"}) == 1
    assert registry.get_sample_value("otp_relay_conversion_blocks_active", {"kind": "country"}) == 0
    rows = {row["key"]: row for row in summary["prefixes"]}
    assert NEIGHBOUR in rows and "+44770080" not in rows  # a blocked key starts a new sample
    assert 0.3 < rows[NEIGHBOUR]["rate"] < 0.7 and rows[NEIGHBOUR]["sent"] >= 10
    assert [r["rate"] for r in summary["prefixes"]] == sorted(r["rate"] for r in summary["prefixes"])
    assert len(summary["prefixes"]) <= 10


async def test_monitor_counts_and_never_refuses(make_rule) -> None:
    traffic = Traffic(make_rule(mode="monitor"))
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20)
    assert traffic.refused == {}
    assert traffic.monitored.get("pumped", 0) > 0 and traffic.sent["pumped"] == 120
    summary = await traffic.rule.summary(t + 400)
    assert summary["mode"] == "monitor" and summary["would_block"] == 1 and summary["blocked"] == 0
    assert [b["enforced"] for b in summary["blocks"]] == [False]


async def test_a_country_whose_codes_go_unused_is_blocked(make_rule) -> None:
    """Pumping spread over many prefixes of one country: each prefix stays under the sample,
    the country does not."""
    traffic = Traffic(make_rule())
    t = await warm(traffic, healthy=20)
    for m in range(8):
        for p in range(10):
            await traffic.minute(t + m * 60 + p, healthy=0, pumped=1, pumped_prefix=f"+23480{p}123",
                                 pumped_country="NG")
        await traffic.minute(t + m * 60, healthy=20)
    gate = await traffic.rule.check("+2348091230000", "NG", t + 600)
    assert gate == Blocked("NG", gate.until, True)  # type: ignore[union-attr]
    assert (await traffic.rule.check("+6591234567", "SG", t + 600)) == Allowed()
    summary = await traffic.rule.summary(t + 600)
    assert [(b["key"], b["kind"]) for b in summary["blocks"]] == [("NG", "country")]


async def pumped_until_blocked(make_rule) -> tuple[Traffic, Blocked]:
    """Healthy traffic, then six minutes of a pump on PUMPED: its first block."""
    traffic = Traffic(make_rule())
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20)
    first = await traffic.rule.check(PUMPED + "0001", "GB", t + 360)
    assert isinstance(first, Blocked)
    return traffic, first


async def test_the_block_expires_and_a_repeat_doubles(make_rule) -> None:
    traffic, first = await pumped_until_blocked(make_rule)
    after = first.until + 1
    assert await traffic.rule.check(PUMPED + "0001", "GB", after) == Allowed()
    # the pump comes back: blocked again, for twice as long
    t = await warm(traffic, minutes=10, start=after, pumped=20)
    second = await traffic.rule.check(PUMPED + "0001", "GB", t)
    assert isinstance(second, Blocked)
    [block] = (await traffic.rule.summary(t))["blocks"]
    assert block["level"] == 2
    assert second.until - after == pytest.approx(7200, abs=700)


async def test_the_repeat_count_is_forgotten_after_a_clean_day(make_rule) -> None:
    traffic, first = await pumped_until_blocked(make_rule)
    later = first.until + 86400 + 60
    t = await warm(traffic, minutes=10, start=later, pumped=20)
    [block] = (await traffic.rule.summary(t))["blocks"]
    assert block["level"] == 1


async def test_lift_removes_a_block_and_an_unknown_key_is_false(make_rule) -> None:
    traffic = Traffic(make_rule())
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20)
    assert isinstance(await traffic.rule.check(PUMPED + "0001", "GB", t + 360), Blocked)
    assert await traffic.rule.lift(PUMPED, t + 361) is True
    assert await traffic.rule.check(PUMPED + "0001", "GB", t + 362) == Allowed()
    assert await traffic.rule.lift(PUMPED, t + 363) is False
    assert await traffic.rule.lift("+999", t + 363) is False
    assert (await traffic.rule.summary(t + 364))["blocks"] == []


@pytest.mark.parametrize("allow", ["GB", "+4477"])
async def test_the_allow_list_is_never_blocked(make_rule, allow: str) -> None:
    traffic = Traffic(make_rule(allow=frozenset({allow})))
    t = await warm(traffic)
    for m in range(6):
        await traffic.minute(t + m * 60, pumped=20)
    assert traffic.refused == {} and traffic.monitored == {}
    assert (await traffic.rule.summary(t + 400))["blocks"] == []


async def test_the_minimum_sample_is_respected(make_rule) -> None:
    traffic = Traffic(make_rule(min_sample=30, window=50))
    t = await warm(traffic)
    await traffic.minute(t, pumped=29)
    gate = await traffic.rule.check(PUMPED + "0001", "GB", t + 200)  # all 29 matured, none used
    assert gate == Allowed()
    await traffic.minute(t + 200, pumped=1)
    assert isinstance(await traffic.rule.check(PUMPED + "0001", "GB", t + 400), Blocked)


async def test_nothing_is_blocked_when_the_whole_channel_stops_converting(make_rule) -> None:
    """A broken log stream or an Auth0 outage: hardly any code looks used, anywhere (1 in 12,
    under the floor of 20 %), so the pumped prefix's none is no evidence."""
    traffic = Traffic(make_rule())
    t = await warm(traffic, healthy_used=lambda i: i % 12 == 0)
    for m in range(10):
        await traffic.minute(t + m * 60, pumped=20, healthy_used=lambda i: i % 12 == 0)
    assert traffic.refused == {} and traffic.monitored == {}
    assert (await traffic.rule.summary(t + 700))["blocks"] == []


async def test_blocked_keys_never_hold_more_than_the_share_cap(make_rule) -> None:
    """Two prefixes whose few real users (1 in 10) are far below the channel: with a cap of 5 %
    of the converting traffic, only the first is blocked; without one, both."""

    async def run(cap: int) -> list[str]:
        traffic = Traffic(make_rule(max_blocked_share=cap))
        t = await warm(traffic, healthy=12)
        for m in range(6):
            for p, prefix in enumerate((PUMPED, "+44770095")):
                await traffic.minute(t + m * 60 + p, healthy=6 * (1 - p), pumped=30, pumped_prefix=prefix,
                                     pumped_used=lambda i: i % 10 == 0)
        return [b["key"] for b in (await traffic.rule.summary(t + 400))["blocks"]]

    assert len(await run(5)) == 1
    assert sorted(await run(100)) == [PUMPED, "+44770095"]


async def test_memory_is_bounded_under_a_flood_of_distinct_keys(make_rule, redis_server) -> None:
    rule = make_rule(max_keys=100, max_pending=500)
    for i in range(2000):
        await rule.sent(Sent(f"flood-{i}", f"+1555{i:04d}0000", "US", T0 + i * 0.01))  # 2,000 prefixes
    await rule.check("+15550000000", "US", T0 + 30)
    if isinstance(rule, MemoryRule):
        assert len(rule) <= 100 and len(rule._pending) <= 500
    else:
        client = redis_server.client()
        p = rule._p
        assert client.zcard(p + "keys") <= 100 and client.zcard(p + "due") <= 500
        assert len(client.keys(p.replace("{", "[{]").replace("}", "[}]") + "k:*")) <= 100
        assert len(client.keys(p.replace("{", "[{]").replace("}", "[}]") + "p:*")) <= 500
        assert all(client.pttl(k) > 0 for k in client.keys(p.replace("{", "[{]").replace("}", "[}]") + "*")
                   if client.type(k) != "zset")


def test_off_is_no_rule_and_settings_are_checked() -> None:
    assert isinstance(build_rule(parse_settings("off")), NoRule)
    assert isinstance(build_rule(parse_settings("monitor")), MemoryRule)
    settings = parse_settings("enforce", allow="gb, +4477", min_sample="8", block_for="30m",
                              max_blocked_share="10")
    assert settings.allow == frozenset({"GB", "+4477"}) and settings.min_sample == 8
    assert settings.block_for == 1800 and settings.max_blocked_share == 10
    for kwargs, message in [({"mode": "block"}, "mode must be one of off, monitor, enforce"),
                            ({"min_sample": "4"}, "minimum sample must be at least 5"),
                            ({"min_sample": "ten"}, "OTP_RELAY_CONVERSION_MIN_SAMPLE must be a whole number"),
                            ({"block_for": "4m"}, "at least 5m"),
                            ({"block_for": "1 hour"}, "OTP_RELAY_CONVERSION_BLOCK_FOR"),
                            ({"max_blocked_share": "0"}, "max blocked share must be 1-100"),
                            ({"allow": "Britain"}, "'Britain' is neither an ISO country"),
                            ({"allow": ",".join(f"+44{i}" for i in range(101))}, "at most 100")]:
        with pytest.raises(ValueError, match=message):
            parse_settings(**{"mode": "enforce", **kwargs})


async def test_replicas_sharing_a_store_see_one_rule(redis_server: RedisServer) -> None:
    """Two relays on one Redis: sends through either count once, and a block started by one
    refuses on the other; a lift through either ends it for both."""
    prefix = f"test:pumping:replicas:{time.monotonic_ns()}"
    clients = [aioredis.Redis.from_url(redis_server.url, password=redis_server.password, decode_responses=True)
               for _ in range(2)]
    try:
        one, two = (RedisRule(RuleSettings(mode="enforce"), client, prefix) for client in clients)

        class Alternating:
            def __init__(self) -> None:
                self.turn = itertools.cycle((one, two))

            def __getattr__(self, name: str):
                return getattr(next(self.turn), name)

        traffic = Traffic(Alternating())
        t = await warm(traffic)
        for m in range(6):
            await traffic.minute(t + m * 60, pumped=20)
        assert traffic.sent["pumped"] <= 50 and traffic.refused["pumped"] > 0
        assert isinstance(await one.check(PUMPED + "0001", "GB", t + 400), Blocked)
        assert isinstance(await two.check(PUMPED + "0001", "GB", t + 400), Blocked)
        assert await one.lift(PUMPED, t + 401) is True
        assert await two.check(PUMPED + "0001", "GB", t + 402) == Allowed()
        assert (await one.summary(t + 402))["reference"] == (await two.summary(t + 402))["reference"]
    finally:
        for client in clients:
            await client.aclose()
