"""Fraud benchmark: a legitimate OTP trace mixed with an SMS-pumping burst, against the
conversion rule (prints figures; not a test). Seeded, bounded in events and time, loopback only.

    .venv/bin/python bench/fraud/run.py                 # phase A: the defaults and the sweep
    .venv/bin/python bench/fraud/run.py --no-sweep --seed 7
    .venv/bin/python bench/fraud/run.py --mode relay    # phase B (see README: not finished)

Phase A (``--mode rule``) drives ``pumping.MemoryRule`` directly on a simulated clock, the way
the tracker does in the relay: ``check`` before each send, ``sent`` after each accepted one,
``converted`` when the user's code shows up in the log stream. It prints, per attacked range,
the pumping SMS accepted before its first refusal, the time to that block and the pumping SMS
accepted over the whole attack, and the legitimate SMS refused on the mixed trace and on the
legitimate-only trace (target: 0), for the defaults and a sweep of one setting at a time.

Phase B (``--mode relay``) is the same trace through the real relay subprocess and the
emulators; the parts that do not need the tracker are here (the trace as Auth0 log events in
the emulator's format, the signed send, the report); ``run_relay`` says what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import heapq
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "relay"))

from prometheus_client import CollectorRegistry  # noqa: E402

from otp_relay.outcomes import Blocked, Sent  # noqa: E402
from otp_relay.pumping import MemoryRule, RuleMetrics, RuleSettings  # noqa: E402

# (ISO, calling code + mobile lead digits, national digits after them, share of users, conversion)
# Conversion is the share of users who type their code: lower where delivery is poorer.
COUNTRIES = (
    ("SG", "+659", 7, 0.18, 0.85), ("MY", "+6012", 7, 0.12, 0.80), ("ID", "+62812", 7, 0.12, 0.72),
    ("IN", "+919", 9, 0.12, 0.70), ("GB", "+447", 9, 0.10, 0.85), ("US", "+1415", 7, 0.10, 0.82),
    ("BR", "+55119", 8, 0.08, 0.74), ("PH", "+63917", 7, 0.07, 0.75), ("NG", "+234803", 7, 0.06, 0.60),
    ("DE", "+49151", 8, 0.05, 0.86),
)
# The attacked ranges: sequential numbers from these (a pump owns blocks of numbers).
ATTACKED = (("GB", "+447700900000"), ("ID", "+6281299000000"), ("NG", "+2348039000000"))


@dataclass(frozen=True)
class Trace:
    minutes: int = 120  # simulated
    legit_per_minute: float = 30.0  # mean, between bursts
    burst_every: float = 20.0  # minutes between bursts (a campaign, a peak hour)
    burst_factor: float = 4.0
    burst_minutes: float = 3.0
    attack_start: float = 40.0  # minutes
    attack_minutes: float = 30.0
    attack_per_minute: float = 30.0  # per attacked range
    attacked: int = len(ATTACKED)
    # 1: plain sequential numbers; 50: every 50th, 20 numbers per 1,000, which stays under the
    # relay's per-prefix volume window (20/1h over 1,000 numbers) that stops a plain run
    attack_stride: int = 50


@dataclass(frozen=True)
class Send:
    at: float
    recipient: str
    country: str
    used_after: float | None  # seconds from the send to the code arriving in the log stream
    attack: int  # -1 legitimate, else the attacked range


def conversion_delay(rng: random.Random) -> float:
    """A user reads the SMS and types the code (log-normal, median 20 s, 95th percentile ~55 s),
    plus the SMS's delivery (2-8 s) and the log stream's batching (1-10 s)."""
    return rng.lognormvariate(math.log(20), 0.6) + rng.uniform(2, 8) + rng.uniform(1, 10)


def legitimate(trace: Trace, rng: random.Random) -> Iterator[Send]:
    weights = [c[3] for c in COUNTRIES]
    t, end = 0.0, trace.minutes * 60
    while True:
        minute = t / 60
        in_burst = (minute % trace.burst_every) < trace.burst_minutes and minute >= trace.burst_every
        rate = trace.legit_per_minute * (trace.burst_factor if in_burst else 1) / 60
        t += rng.expovariate(rate)
        if t >= end:
            return
        iso, lead, digits, _, conversion = rng.choices(COUNTRIES, weights)[0]
        number = lead + "".join(rng.choice("0123456789") for _ in range(digits))
        used = conversion_delay(rng) if rng.random() < conversion else None
        yield Send(t, number, iso, used, -1)


def pumping(trace: Trace, rng: random.Random) -> Iterator[Send]:
    """Each range: sequential numbers, bot-paced (exponential gaps), never converted."""
    for index, (iso, base) in enumerate(ATTACKED[: trace.attacked]):
        t = trace.attack_start * 60 + rng.uniform(0, 30)
        end = (trace.attack_start + trace.attack_minutes) * 60
        first = int(base[1:])
        n = 0
        while True:
            t += rng.expovariate(trace.attack_per_minute / 60)
            if t >= end:
                break
            yield Send(t, f"+{first + n * trace.attack_stride}", iso, None, index)
            n += 1


def events(trace: Trace, seed: int, attack: bool) -> list[Send]:
    rng = random.Random(seed)
    sends = list(legitimate(trace, rng))
    if attack:
        sends += list(pumping(trace, random.Random(seed + 1)))
    return sorted(sends, key=lambda s: s.at)


@dataclass
class Result:
    legit_sent: int = 0
    legit_refused: int = 0
    legit_volume_refused: int = 0  # by the per-prefix volume window, not the rule
    pump_sent: list[int] = dataclasses.field(default_factory=list)
    pump_before_block: list[int | None] = dataclasses.field(default_factory=list)
    time_to_block: list[float | None] = dataclasses.field(default_factory=list)
    blocks: list[str] = dataclasses.field(default_factory=list)  # the kind of each block started


async def run_rule(settings: RuleSettings, trace: Trace, seed: int, attack: bool) -> Result:
    """Phase A: the trace through the rule on a simulated clock."""
    registry = CollectorRegistry()
    rule = MemoryRule(settings, RuleMetrics(registry))
    sends = events(trace, seed, attack)
    result = Result(pump_sent=[0] * trace.attacked, pump_before_block=[None] * trace.attacked,
                    time_to_block=[None] * trace.attacked)
    starts: dict[int, float] = {}
    volume: dict[tuple[str, int], int] = {}  # the relay's per-prefix window, 20/1h per 1,000 numbers
    conversions: list[tuple[float, str]] = []  # (when the log event arrives, message id)
    for i, send in enumerate(sends):
        while conversions and conversions[0][0] <= send.at:
            at, umid = heapq.heappop(conversions)
            await rule.converted(umid, at)
        if send.attack >= 0:
            starts.setdefault(send.attack, send.at)
        gate = await rule.check(send.recipient, send.country, send.at)
        if isinstance(gate, Blocked) and gate.enforced:
            if send.attack < 0:
                result.legit_refused += 1
            elif result.pump_before_block[send.attack] is None:
                result.pump_before_block[send.attack] = result.pump_sent[send.attack]
                result.time_to_block[send.attack] = send.at - starts[send.attack]
            continue
        window = (send.recipient[:-3], int(send.at // 3600))
        if volume.get(window, 0) >= 20:
            if send.attack < 0:
                result.legit_volume_refused += 1
            continue
        volume[window] = volume.get(window, 0) + 1
        umid = f"umid-{i}"
        await rule.sent(Sent(umid, send.recipient, send.country, send.at))
        if send.attack < 0:
            result.legit_sent += 1
        else:
            result.pump_sent[send.attack] += 1
        if send.used_after is not None:
            heapq.heappush(conversions, (send.at + send.used_after, umid))
    for kind in ("prefix", "country"):
        started = sum(registry.get_sample_value("otp_relay_conversion_blocks_total", {"kind": kind, "mode": m}) or 0
                      for m in ("monitor", "enforce"))
        result.blocks += [kind] * int(started)
    return result


# --- phase B: the real relay (finished by the integrator once conversion.py lands) ------------
def auth0_log_batch(send: Send, used_at: float | None, tenant: str = "bench") -> list[dict[str, Any]]:
    """The log stream items (``{log_id, data}``) a tenant writes for one MFA SMS: sent, and
    (when the user types the code) ``gd_auth_succeed``, in the emulator's format."""
    sys.path.insert(0, str(ROOT / "sandbox"))
    from otp_sandbox.auth0_emulator import logevents
    from otp_sandbox.auth0_emulator.events import PhoneMessage
    from otp_sandbox.auth0_emulator.logstreams import item

    code = logevents.SentCode(PhoneMessage(recipient=send.recipient, text="Your code is 000000"),
                              sent=True, transaction_id=logevents.new_transaction(), connection_id=None)
    batch = [item(logevents.sent_event(tenant, send.at, code, "sent", None))]
    if used_at is not None:
        batch.append(item(logevents.used_event(tenant, used_at, code, True)))
    return batch


def signed_send(signing_key: str, send: Send, subject: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A ``POST /v1/messages`` body and its signature headers, as the Auth0 code makes them."""
    import orjson

    from otp_relay.signing import sign

    body: dict[str, Any] = {"recipient": send.recipient, "text": "Your code is 000000",
                            "message_type": "otp_verify", "code": "000000"}
    if subject is not None:
        body["subject"] = subject
    raw = orjson.dumps(body)
    timestamp = int(time.time())
    return raw, {"Content-Type": "application/json", "X-Otp-Timestamp": str(timestamp),
                 "X-Otp-Signature": sign(signing_key, timestamp, raw)}


def run_relay(settings: RuleSettings, trace: Trace, seed: int, attack: bool) -> Result:
    """Phase B. Left for the integrator once the tracker (conversion.py) is merged: start the
    8x8 emulator and a relay subprocess with OTP_RELAY_CONVERSION=true, a log token file and
    OTP_RELAY_CONVERSION_BLOCKING=enforce (tests/fixtures/relay.py's RelayProcess and
    relay_env do both); replay ``events(trace, seed, attack)`` at a time factor (the relay's
    clock is real, so the trace must be compressed or the maturity shortened); for each send,
    POST ``signed_send`` to /v1/messages (a 403 with type .../conversion-blocked is a refusal),
    and POST ``auth0_log_batch`` of the matched umid to /v1/auth0-logs with
    ``Authorization: Bearer <token>``; fill ``Result`` from the answers and read the 8x8
    feedback calls from the emulator; ``report`` prints it the same way."""
    raise SystemExit("phase B (--mode relay) needs the conversion tracker; see bench/fraud/README.md")


def report(name: str, mixed: Result, clean: Result) -> str:
    before = "/".join("-" if b is None else str(b) for b in mixed.pump_before_block)
    times = "/".join("never" if t is None else f"{t:.0f}s" for t in mixed.time_to_block)
    prefixes = mixed.blocks.count("prefix")
    countries = len(mixed.blocks) - prefixes
    per_block = f"{sum(mixed.pump_sent) / len(mixed.blocks):.0f}" if mixed.blocks else "-"
    return (f"| {name} | {before} | {times} | {sum(mixed.pump_sent)} | {prefixes} / {countries} | {per_block} "
            f"| {mixed.legit_refused} of {mixed.legit_sent + mixed.legit_refused} "
            f"| {clean.legit_refused} of {clean.legit_sent + clean.legit_refused} |")


HEADER = ("| settings | pump SMS before the first block (per range) | time to block | pump SMS in total "
          "| blocks started (prefix / country) | pump SMS per block | legit refused (mixed) "
          "| legit refused (legit only) |\n|---|---|---|---|---|---|---|---|")

SWEEP: tuple[tuple[str, Any], ...] = (
    ("maturity", 30.0), ("maturity", 60.0), ("maturity", 90.0), ("maturity", 120.0),
    ("min_sample", 5), ("min_sample", 20),
    ("ratio", 0.1), ("ratio", 0.5),
    ("prefix_digits", 3), ("prefix_digits", 5), ("prefix_digits", 6),
)


async def phase_a(args: argparse.Namespace) -> None:
    trace = Trace(minutes=args.minutes, attack_per_minute=args.attack_per_minute)
    base = RuleSettings(mode="enforce")
    runs: list[tuple[str, RuleSettings, Trace]] = [("defaults", base, trace)]
    if args.sweep:
        runs += [(f"{name}={value}", dataclasses.replace(base, **{name: value}), trace) for name, value in SWEEP]
        runs.append(("plain sequential attack (stride 1)", base, dataclasses.replace(trace, attack_stride=1)))
        for rate in (10.0, 60.0, 120.0):
            runs.append((f"attack {rate:g}/min per range", base, dataclasses.replace(trace, attack_per_minute=rate)))
        runs.append(("3x legit traffic", base, dataclasses.replace(trace, legit_per_minute=90.0)))
    started = time.monotonic()
    print(f"trace: {trace.minutes} min, ~{trace.legit_per_minute:g} legit SMS/min (x{trace.burst_factor:g} bursts), "
          f"{trace.attacked} attacked ranges at {trace.attack_per_minute:g}/min each from minute "
          f"{trace.attack_start:g} for {trace.attack_minutes:g} min, every {trace.attack_stride}th number; "
          f"seed {args.seed}; the relay's per-prefix volume window (20/1h per 1,000 numbers) in front")
    print(HEADER)
    for name, settings, run_trace in runs:
        mixed = await run_rule(settings, run_trace, args.seed, attack=True)
        clean = await run_rule(settings, run_trace, args.seed, attack=False)
        print(report(name, mixed, clean), flush=True)
    print(f"({time.monotonic() - started:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("rule", "relay"), default="rule")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--minutes", type=int, default=120, help="simulated minutes (at most 600)")
    parser.add_argument("--attack-per-minute", type=float, default=30.0)
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    args = parser.parse_args()
    if not 10 <= args.minutes <= 600:
        parser.error("--minutes must be 10-600")
    if args.mode == "relay":
        run_relay(RuleSettings(mode="enforce"), Trace(minutes=args.minutes), args.seed, True)
    asyncio.run(phase_a(args))


if __name__ == "__main__":
    main()
