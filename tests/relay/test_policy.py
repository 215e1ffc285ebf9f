"""SMS-pumping defences on by default: number types, segments, prefix, country and client-IP
budgets (exact across replicas with Redis), monitor mode, and the expiry on every send."""

from __future__ import annotations

import datetime as dt
import re
import time

import phonenumbers
import pytest

from otp_relay import config, policy
from otp_relay.limits import FixedWindows
from otp_relay.state import Limited, MemoryState, Proceed, Timing
from tests.fixtures.redis import RedisServer
from tests.fixtures.relay import otp_body

from .conftest import SIGNING_KEYS, fresh_number, problem

KEY = SIGNING_KEYS[1]


def _example(region: str, kind: int) -> str:
    number = phonenumbers.example_number_for_type(region, kind)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_premium_rate_and_other_pumping_targets_get_no_sms(make_relay, emulator) -> None:
    """With the default settings: refused with a 403 naming the type, nothing sent to 8x8; a
    mobile number gets its SMS with an expiry at the code's validity (5 minutes)."""
    relay = make_relay()
    refused = {
        "+449090901234": "PREMIUM_RATE",  # UK 09
        "+19005550123": "PREMIUM_RATE",  # US 900
        _example("FR", phonenumbers.PhoneNumberType.SHARED_COST): "SHARED_COST",  # FR 08 84
        "+881612345678": "NON_GEOGRAPHIC (+881)",  # satellite
        "+979123456789": "NON_GEOGRAPHIC (+979)",  # international premium rate
        "+6561234567": "FIXED_LINE",  # SG landline: no SMS
    }
    for number, kind in refused.items():
        answer = relay.post(otp_body(number), KEY)
        assert answer.status_code == 403, (kind, answer.text)
        assert problem(answer)["detail"] == f"numbers of type {kind} get no SMS by policy"
    assert emulator.requests() == []
    assert relay.metric("otp_relay_policy_refusals_total", rule="number_type", mode="enforced") == len(refused)
    sent_at = dt.datetime.now(dt.timezone.utc)
    assert relay.post(otp_body(fresh_number()), KEY).status_code == 202
    expiry = dt.datetime.fromisoformat(emulator.messages()[-1].expiry)
    assert dt.timedelta(minutes=4) < expiry - sent_at <= dt.timedelta(minutes=5, seconds=2)


def test_monitor_mode_refuses_nothing_and_counts(make_relay, emulator) -> None:
    relay = make_relay(MONITOR_RULES="number_type,prefix,segments", PER_PREFIX="1/1h", MAX_SEGMENTS="1")
    first = fresh_number()
    neighbour = first[:-1] + ("1" if first[-1] == "0" else "0")  # same prefix
    sends = [otp_body("+449090901234"), otp_body(first), otp_body(neighbour),
             otp_body(fresh_number("+6598"), text="Your code is 123456. " + "x" * 200)]
    assert [relay.post(body, KEY).status_code for body in sends] == [202] * 4
    assert len(emulator.messages()) == 4
    for rule in ("number_type", "prefix", "segments"):
        assert relay.metric("otp_relay_policy_refusals_total", rule=rule, mode="monitored") == 1, rule
        assert relay.metric("otp_relay_policy_refusals_total", rule=rule, mode="enforced") == 0, rule
    relay.stop()
    flagged = [r.get("would_refuse") for r in relay.log_records() if r.get("msg") == "send"]
    assert sorted(filter(None, flagged)) == ["number_type", "prefix", "segments"]


def test_a_text_over_the_segment_cap_is_refused(make_relay, emulator) -> None:
    relay = make_relay()
    answer = relay.post(otp_body(fresh_number(), text="Ваш код 123456. " + "я" * 200), KEY)
    assert answer.status_code == 400
    assert problem(answer)["detail"] == "'text' needs 4 SMS segments, more than the 3 a message may use"
    assert emulator.requests() == []


def _clear_of_the_hour() -> None:
    """The country budget is an hour-long fixed window: do not start a few seconds before it turns."""
    left = 3600 - time.time() % 3600
    if left < 15:
        time.sleep(left + 0.1)


def test_prefix_country_ip_and_segment_budgets_hold_across_two_replicas(make_relay, redis_server: RedisServer,
                                                                        emulator, request) -> None:
    shared = {"STATE_URL": redis_server.url, "STATE_PASSWORD_FILE": str(redis_server.password_file),
              "STATE_PREFIX": f"test:policy:{time.monotonic_ns()}", "PER_PREFIX": "3/1h",
              "COUNTRY_HOUR": "6/1h", "PER_CLIENT_IP": "2/1h"}
    replicas = [make_relay(**shared), make_relay(**shared)]
    _clear_of_the_hour()

    def send(i: int, body: dict) -> int:
        return replicas[i % 2].post(body, KEY).status_code

    block = fresh_number("+6591")[:-3]  # SG: 4 numbers of one prefix
    assert [send(i, otp_body(f"{block}{i:03d}")) for i in range(4)] == [202, 202, 202, 429]
    ips = ("2001:db8:7:2::1", "2001:db8:7:2::ffff", "2001:db8:7:2:abcd::5")  # one /64
    statuses = [send(i, otp_body(fresh_number(f"+659{i + 2}"), client_ip=ip)) for i, ip in enumerate(ips)]
    assert statuses == [202, 202, 429]  # SG has now spent 5 of its 6
    two_segments = "Your code is 123456. " + "x" * 150  # GSM-7, 171 septets
    assert policy.segments(two_segments) == 2
    my = [send(i, otp_body(fresh_number(f"+6012{i}"), text=two_segments)) for i in range(4)]
    assert my == [202, 202, 202, 429]  # MY: 2 + 2 + 2 segments, then over 6
    limited = replicas[0].post(otp_body(fresh_number("+60171"), text=two_segments), KEY)
    assert problem(limited)["detail"] == "hourly budget for this country reached"
    assert 1 <= int(limited.headers["Retry-After"]) <= 3600
    assert len(emulator.messages()) == 3 + 2 + 3
    assert sum(r.metric("otp_relay_policy_refusals_total", rule="prefix", mode="enforced") for r in replicas) == 1


# --- units ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, encoding, expected", [
    ("x" * 160, "AUTO", 1), ("x" * 161, "AUTO", 2), ("x" * 306, "AUTO", 2), ("x" * 307, "AUTO", 3),
    ("€" * 80, "AUTO", 1), ("€" * 81, "AUTO", 2),  # the extension table costs two septets
    ("x" * 152 + "€" + "x" * 10, "AUTO", 2),  # an escape pair is never split: 152 + (2 + 10)
    ("я" * 70, "AUTO", 1), ("я" * 71, "AUTO", 2), ("я" * 134, "AUTO", 2), ("я" * 135, "AUTO", 3),
    ("😀" * 35, "AUTO", 1), ("😀" * 36, "AUTO", 2),  # a surrogate pair is two UTF-16 units
    ("x" * 71, "UCS2", 2), ("я" * 160, "GSM7", 1),
    ("x" * 1600, "AUTO", 11), ("я" * 1600, "AUTO", 24),
])
def test_segments(text: str, encoding: str, expected: int) -> None:
    assert policy.segments(text, encoding) == expected


def test_number_policy_and_keys() -> None:
    default = policy.NumberPolicy()
    assert default.refusal("MOBILE", "SG", 65) is None
    assert default.refusal("FIXED_LINE_OR_MOBILE", "US", 1) is None
    assert default.refusal("VOIP", "GB", 44) == "VOIP"
    assert default.refusal("MOBILE", "001", 882) == "NON_GEOGRAPHIC (+882)"
    allowed = policy.NumberPolicy(frozenset({"VOIP"}), frozenset({882}))
    assert allowed.refusal("VOIP", "GB", 44) is None and allowed.refusal("MOBILE", "001", 882) is None
    assert policy.prefix_of("+6591234567") == "+6591234"
    assert policy.ip_group("2001:db8:1:2:3:4:5:6") == policy.ip_group("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert policy.ip_group("203.0.113.9") == "203.0.113.9"


def test_policy_settings() -> None:
    base = {"OTP_RELAY_SUBACCOUNT": "shop_otp", "OTP_RELAY_API_KEY_FILE": "/k", "OTP_RELAY_SIGNING_KEY_FILE": "/s"}
    settings = config.load([], base)
    assert (settings.per_prefix, settings.country_hour, settings.country_day, settings.per_client_ip) == (
        config.Rate(20, 3600), config.Rate(2000, 3600), config.Rate(20000, 86400), None)
    assert (settings.max_segments, settings.code_validity, settings.monitor_rules) == (3, 300, frozenset())
    for name, value, message in (("MONITOR_RULES", "prefix,nope", "unknown name(s) nope"),
                                 ("ALLOW_NUMBER_TYPES", "MOBILE,CHEAP", "unknown name(s) CHEAP"),
                                 ("ALLOW_NON_GEOGRAPHIC", "44", "not non-geographic calling code(s): 44"),
                                 ("CODE_VALIDITY", "5 minutes", "expected a duration")):
        with pytest.raises(config.ConfigError, match=re.escape(message)):
            config.load([], {**base, f"OTP_RELAY_{name}": value})


async def test_memory_state_charges_segments_and_windows() -> None:
    state = MemoryState(config.Rate(100, 60), config.Rate(6, 3600), Timing(900, 7))
    country = policy.Window("country_hour", "MY", 4, 3600, 2)
    watched = policy.Window("prefix", "p1", 1, 3600, 1, monitor=True)
    assert await state.claim("a", "+60121000001", "r", 2, (country, watched)) == Proceed()
    assert await state.claim("b", "+60121000002", "r", 2, (country, watched)) == Proceed(("prefix",))
    verdict = await state.claim("c", "+60121000003", "r", 2, (country,))
    assert isinstance(verdict, Limited) and verdict.limit == "country_hour"
    verdict = await state.claim("d", "+60121000004", "r", 3, ())
    assert isinstance(verdict, Limited) and verdict.limit == "global"  # 6 tokens: 2 + 2 spent


def test_fixed_windows_are_bounded() -> None:
    windows = FixedWindows(max_keys=10)
    for i in range(25):
        windows.record(f"t{i}", 60, 1, now=float(i))
    assert len(windows) <= 10
    assert windows.retry_after("t24", 1, 60, 1, now=30.0) == pytest.approx(30.0)
