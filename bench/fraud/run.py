"""Fraud benchmark: a legitimate OTP trace mixed with an SMS-pumping burst, against the
conversion rule (prints figures; not a test). Seeded, bounded in events and time, loopback only.

    .venv/bin/python bench/fraud/run.py                 # phase A (defaults and sweep), then phase B
    .venv/bin/python bench/fraud/run.py --mode rule --no-sweep --seed 7
    .venv/bin/python bench/fraud/run.py --relay         # phase B only (~6 minutes)

Phase A (``--mode rule``) drives ``pumping.MemoryRule`` directly on a simulated clock, the way
the tracker does in the relay: ``check`` before each send, ``sent`` after each accepted one,
``converted`` when the user's code shows up in the log stream. It prints, per attacked range,
the pumping SMS accepted before its first refusal, the time to that block and the pumping SMS
accepted over the whole attack, and the legitimate SMS refused on the mixed trace and on the
legitimate-only trace (target: 0), for the defaults and a sweep of one setting at a time.

Phase B (``--mode relay``) replays a compressed trace in real time through two ``otp-relay``
processes (the mixed trace and a legitimate-only one, at the same time, one subaccount each) on
the 8x8 emulator: signed sends, the tenant's log events posted to the sink in Auth0's batches,
8x8's feedback read back from the emulator; it prints the tables and PASS/FAIL per target and
exits 1 when a target is missed.
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
from collections.abc import Callable, Iterator
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


def legitimate(trace: Trace, rng: random.Random, valid: Callable[[str], bool] | None = None) -> Iterator[Send]:
    """Poisson arrivals in the countries' shares; ``valid``: numbers it refuses are drawn again
    (phase B: the relay sends only to numbers libphonenumber takes for mobiles)."""
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
        while valid is not None and not valid(number):
            number = lead + "".join(rng.choice("0123456789") for _ in range(digits))
        used = conversion_delay(rng) if rng.random() < conversion else None
        yield Send(t, number, iso, used, -1)


def pumping(trace: Trace, rng: random.Random,
            ranges: tuple[tuple[str, str], ...] = ATTACKED) -> Iterator[Send]:
    """Each range: sequential numbers, bot-paced (exponential gaps), never converted."""
    for index, (iso, base) in enumerate(ranges[: trace.attacked]):
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


def events(trace: Trace, seed: int, attack: bool, valid: Callable[[str], bool] | None = None,
           ranges: tuple[tuple[str, str], ...] = ATTACKED) -> list[Send]:
    rng = random.Random(seed)
    sends = list(legitimate(trace, rng, valid))
    if attack:
        sends += list(pumping(trace, random.Random(seed + 1), ranges))
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


# --- phase B: the real relay and the emulators, in real time -----------------------------------
# The relay's clock is real, so phase B replays a compressed trace: the same generators with a
# few minutes of legitimate traffic (a burst included) and a shorter attack; users keep their real
# typing delays, since the rule's maturity (45 s) is real seconds too.
RELAY_TRACE = Trace(minutes=4, legit_per_minute=40.0, burst_every=2.0, burst_factor=3.0, burst_minutes=0.5,
                    attack_start=1.5, attack_minutes=2.5, attack_per_minute=30.0)
RELAY_CLEAN_MINUTES = 3  # the legitimate-only pass (run at the same time, on its own subaccount)
# 07700 900xxx is Ofcom's drama range: libphonenumber, and so the relay, takes it for no number.
RELAY_ATTACKED = (("GB", "+447911100000"), *ATTACKED[1:])
FAILURE_AFTER = 60  # seconds: --conversion-failure-after, shortened from the default 10m
FEEDBACK_SLACK = 30.0  # seconds past failure_after (the 5 s failure scan, 8x8's answer) allowed
FEEDBACK_LIMIT = 15 * 60  # 8x8's window
PHASE_B_LIMIT = 9 * 60  # seconds: the passes are stopped past this, whatever they wait for
BATCH_EVERY = 3.0  # seconds: how often the tenant's log stream posts what it has (<= 100 each)
BATCH_MAX = 100
SIGNING_KEY = "bench-fraud-signing-key-0123456789"
LOG_TOKEN = "bench-fraud-log-token-Qm9xWz4R7Hc2"
TENANT = "bench"


def mobile(number: str) -> bool:
    import phonenumbers

    parsed = phonenumbers.parse(number)
    return phonenumbers.is_valid_number(parsed) and phonenumbers.number_type(parsed) in (
        phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def auth0_events(recipient: str, sent_at: float, used_at: float | None, user_id: str,
                 by_subject: bool) -> list[tuple[float, dict[str, Any]]]:
    """The log stream items (``{log_id, data}``) the tenant writes for one MFA SMS, with when:
    ``gd_send_sms``, then ``gd_auth_succeed`` when the user types the code (the emulator's
    format, ``logevents``), for this user. ``by_subject``: the event names the user only (an
    email as user_name, no phone number), so only the send's ``subject`` can match it."""
    sys.path.insert(0, str(ROOT / "sandbox"))
    from otp_sandbox.auth0_emulator import logevents
    from otp_sandbox.auth0_emulator.events import PhoneMessage
    from otp_sandbox.auth0_emulator.logstreams import item

    code = logevents.SentCode(PhoneMessage(recipient=recipient, text="Your code is 000000"),
                              sent=True, transaction_id=logevents.new_transaction(), connection_id=None)
    timed = [(sent_at + 1.0, logevents.sent_event(TENANT, sent_at + 1.0, code, "sent", None))]
    if used_at is not None:
        timed.append((used_at, logevents.used_event(TENANT, used_at, code, True)))
    out = []
    for at, event in timed:
        event["user_id"] = user_id
        if by_subject:
            event["user_name"] = f"{user_id.split('|')[-1]}@example.com"
            details = event["details"]
            details["authenticator"].pop("phone_number", None)
            for field_name in ("phone_number", "identifier", "name"):
                details["enrollment"].pop(field_name, None)
        out.append((at, item(event)))
    return out


def signed_send(signing_key: str, recipient: str, code: str, subject: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A ``POST /v1/messages`` body and its signature headers, as the Auth0 code makes them."""
    import orjson

    from otp_relay.signing import sign

    body: dict[str, Any] = {"recipient": recipient, "text": f"Your code is {code}",
                            "message_type": "otp_verify", "delivery_method": "text", "code": code}
    if subject is not None:
        body["subject"] = subject
    raw = orjson.dumps(body)
    timestamp = int(time.time())
    return raw, {"Content-Type": "application/json", "X-Otp-Timestamp": str(timestamp),
                 "X-Otp-Signature": sign(signing_key, timestamp, raw)}


@dataclass
class Answer:
    send: Send
    index: int
    scheduled: float  # epoch
    status: int = 0
    problem: str = ""  # the 403's type, when one
    umid: str = ""
    answered: float = 0.0  # epoch


@dataclass
class PassResult:
    name: str
    subaccount: str
    answers: list[Answer] = dataclasses.field(default_factory=list)
    sink: dict[str, int] = dataclasses.field(default_factory=dict)  # the sink's results, summed
    sink_by_kind: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    sink_errors: int = 0
    messages: list[Any] = dataclasses.field(default_factory=list)  # the emulator's SentMessage
    feedback: list[Any] = dataclasses.field(default_factory=list)  # the emulator's ConversionFeedback
    metrics: str = ""
    waited: float = 0.0


class LogStream:
    """The tenant's http log stream: events become due at their time and are posted every
    ``BATCH_EVERY`` seconds in JSONARRAY batches of at most ``BATCH_MAX``, with the bearer."""

    def __init__(self, client: Any, url: str, result: PassResult) -> None:
        self.client, self.url, self.result = client, url, result
        self.queue: list[tuple[float, int, str, dict[str, Any]]] = []
        self._n = 0

    def add(self, at: float, kind: str, item: dict[str, Any]) -> None:
        self._n += 1
        heapq.heappush(self.queue, (at, self._n, kind, item))

    async def flush(self, until: float) -> None:
        due: list[tuple[str, dict[str, Any]]] = []
        while self.queue and self.queue[0][0] <= until:
            _, _, kind, item = heapq.heappop(self.queue)
            due.append((kind, item))
        for start in range(0, len(due), BATCH_MAX):
            chunk = due[start:start + BATCH_MAX]
            for kind in {k for k, _ in chunk}:  # one post per kind, so the sink's tally is per kind
                items = [i for k, i in chunk if k == kind]
                try:
                    answer = await self.client.post(self.url, json=items,
                                                    headers={"Authorization": f"Bearer {LOG_TOKEN}"})
                except Exception:
                    self.result.sink_errors += 1
                    continue
                if answer.status_code != 200:
                    self.result.sink_errors += 1
                    continue
                tally = self.result.sink_by_kind.setdefault(kind, {})
                for what, n in answer.json()["results"].items():
                    tally[what] = tally.get(what, 0) + n
                    self.result.sink[what] = self.result.sink.get(what, 0) + n

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), BATCH_EVERY)
            except TimeoutError:
                pass
            await self.flush(time.time())
        while self.queue:  # what is still to come (late users) goes out at its time
            await asyncio.sleep(min(BATCH_EVERY, max(0.0, self.queue[0][0] - time.time())))
            await self.flush(time.time())


async def replay(relay: Any, emulator: Any, name: str, subaccount: str, sends: list[Send],
                 seed: int) -> PassResult:
    """One pass: every send at its time (signed, to the relay), each accepted legitimate one's
    log events to the sink; then wait for 8x8's feedback on every accepted SMS."""
    import httpx
    import orjson

    from otp_relay.conversion import BLOCKED_TYPE, subject_for

    result = PassResult(name, subaccount)
    rng = random.Random(seed + 7)
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=64)) as client:
        stream = LogStream(client, relay.url + "/v1/auth0-logs", result)
        stop = asyncio.Event()
        streamer = asyncio.create_task(stream.run(stop))
        start = time.time() + 1.0

        async def one(answer: Answer) -> None:
            send, legit = answer.send, answer.send.attack < 0
            user_id = f"auth0|bench{answer.index:07d}" if legit else f"auth0|pump{answer.index:07d}"
            by_subject = legit and answer.index % 2 == 1
            subject = subject_for(SIGNING_KEY, user_id) if by_subject else None
            raw, headers = signed_send(SIGNING_KEY, send.recipient, f"{rng.randrange(10**6):06d}", subject)
            try:
                reply = await client.post(relay.url + "/v1/messages", content=raw, headers=headers)
            except Exception:
                answer.status = -1
                return
            answer.answered = time.time()
            answer.status = reply.status_code
            body = orjson.loads(reply.content) if reply.content else {}
            if reply.status_code == 202:
                answer.umid = body["id"].lower()
                used = answer.answered + send.used_after if send.used_after is not None else None
                for at, item in auth0_events(send.recipient, answer.answered, used, user_id, by_subject):
                    stream.add(at, "subject" if by_subject else "number", item)
            elif reply.status_code == 403:
                answer.problem = body.get("type", "")
                if answer.problem != BLOCKED_TYPE:
                    answer.problem = "other: " + str(body.get("detail", ""))[:80]

        tasks = []
        for index, send in enumerate(sends):
            answer = Answer(send, index, start + send.at)
            result.answers.append(answer)
            await asyncio.sleep(max(0.0, answer.scheduled - time.time()))
            tasks.append(asyncio.create_task(one(answer)))
        await asyncio.gather(*tasks)
        stop.set()
        await streamer
        # every accepted SMS gets its feedback: a used code at once, an unused one at failure_after
        accepted = {a.umid for a in result.answers if a.umid}
        last = max((a.answered for a in result.answers if a.umid), default=time.time())
        deadline = last + FAILURE_AFTER + FEEDBACK_SLACK
        waited_from = time.time()
        while True:
            feedback = [f for f in await asyncio.to_thread(emulator.feedback) if f.subaccount == subaccount]
            if accepted <= {f.umid.lower() for f in feedback} or time.time() > deadline:
                break
            await asyncio.sleep(2.0)
        result.waited = time.time() - waited_from
        result.feedback = feedback
        result.messages = [m for m in await asyncio.to_thread(emulator.messages) if m.subaccount == subaccount]
        result.metrics = (await client.get(relay.admin_url + "/metrics")).text
    return result


def start_relay(workdir: Path, emulator: Any, trust: Path, subaccount: str, api_key: str) -> Any:
    sys.path.insert(0, str(ROOT / "sandbox"))
    from otp_sandbox.processes import RelayProcess

    workdir.mkdir(parents=True)
    (workdir / "apikey").write_text(api_key + "\n")
    (workdir / "signing-keys").write_text(SIGNING_KEY + "\n")
    (workdir / "log-tokens").write_text(LOG_TOKEN + "\n")
    emulator.add_subaccount(subaccount, api_key)
    emulator.set_tracking(subaccount)
    env = {
        "OTP_RELAY_SMS_BASE_URL": emulator.base_url, "OTP_RELAY_SUBACCOUNT": subaccount,
        "OTP_RELAY_API_KEY_FILE": str(workdir / "apikey"),
        "OTP_RELAY_SIGNING_KEY_FILE": str(workdir / "signing-keys"),
        "SSL_CERT_FILE": str(trust), "OTP_RELAY_LOG_LEVEL": "WARNING",
        "OTP_RELAY_CONVERSION": "true", "OTP_RELAY_LOG_TOKEN_FILE": str(workdir / "log-tokens"),
        "OTP_RELAY_CONVERSION_BLOCKING": "enforce",
        "OTP_RELAY_CONVERSION_FAILURE_AFTER": f"{FAILURE_AFTER}s",
    }
    return RelayProcess.start(workdir, env, name=subaccount)


def _iso_epoch(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def relay_report(mixed: PassResult, clean: PassResult, ranges: tuple[tuple[str, str], ...]) -> tuple[str, bool]:
    """The phase B tables and the PASS/FAIL lines; whether every target was met."""
    sys.path.insert(0, str(ROOT / "sandbox"))
    from otp_relay.conversion import BLOCKED_TYPE
    from otp_sandbox.processes import metric_value

    lines = ["", "Per attacked prefix (mixed pass):", "",
             "| range | pump SMS before the block (relay 202s / 8x8 messages) | time to block "
             "| pump SMS accepted in total / refused | blocks started |",
             "|---|---|---|---|---|"]
    prefix_blocks = metric_value(mixed.metrics, "otp_relay_conversion_blocks_total", kind="prefix")
    country_blocks = metric_value(mixed.metrics, "otp_relay_conversion_blocks_total", kind="country")
    range_of = {a.send.recipient.lstrip("+"): a.send.attack for a in mixed.answers}  # 8x8 drops the +
    worst_before = 0
    for index, (iso, base) in enumerate(ranges):
        pump = sorted((a for a in mixed.answers if a.send.attack == index), key=lambda a: a.scheduled)
        first = pump[0].scheduled if pump else 0.0
        blocked = next((a for a in pump if a.problem == BLOCKED_TYPE), None)
        accepted = [a for a in pump if a.status == 202]
        if blocked is None:
            before, before_8x8, to_block = len(accepted), "-", "never"
            worst_before = max(worst_before, 10**9)
        else:
            before = sum(1 for a in accepted if a.scheduled < blocked.scheduled)
            before_8x8 = str(sum(1 for m in mixed.messages if range_of.get(m.destination) == index
                                 and m.accepted_at and _iso_epoch(m.accepted_at) < blocked.answered))
            to_block = f"{blocked.scheduled - first:.0f}s"
            worst_before = max(worst_before, before, int(before_8x8))
        refused = sum(1 for a in pump if a.problem == BLOCKED_TYPE)
        blocks = f"{prefix_blocks:g} prefix / {country_blocks:g} country (the relay's)" if index == 0 else "\""
        lines.append(f"| {iso} {base[:-4]}xxxx | {before} / {before_8x8} | {to_block} | {len(accepted)} / {refused} "
                     f"| {blocks} |")
    lines += ["", "Both passes:", "",
              "| pass | SMS sent (legit / pump) | legit refused by the rule | other answers | log events "
              "(matched by number / by subject, unknown, ignored) | 8x8 feedback (success / failure) "
              "| accepted SMS without feedback | feedback delay max | wrong outcomes |",
              "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for run in (mixed, clean):
        legit = [a for a in run.answers if a.send.attack < 0]
        pump = [a for a in run.answers if a.send.attack >= 0]
        refused = sum(1 for a in legit if a.problem == BLOCKED_TYPE)
        other: dict[str, int] = {}
        for a in run.answers:
            if a.status != 202 and a.problem != BLOCKED_TYPE:
                other[str(a.status)] = other.get(str(a.status), 0) + 1
        by_umid = {f.umid.lower(): f for f in run.feedback}
        accepted = [a for a in run.answers if a.umid]
        missing = [a for a in accepted if a.umid not in by_umid]
        delays = [by_umid[a.umid].after_seconds for a in accepted if a.umid in by_umid]
        success = sum(1 for f in run.feedback if f.outcome == "success")
        failure = sum(1 for f in run.feedback if f.outcome == "failure")
        # a used code reported failure (its user was too slow) or a pump SMS reported success
        wrong_pump = sum(1 for a in accepted if a.send.attack >= 0 and a.umid in by_umid
                         and by_umid[a.umid].outcome == "success")
        late_users = sum(1 for a in accepted if a.send.attack < 0 and a.send.used_after is not None
                         and a.umid in by_umid and by_umid[a.umid].outcome == "failure")
        number_kind, subject_kind = run.sink_by_kind.get("number", {}), run.sink_by_kind.get("subject", {})
        events = (f"{number_kind.get('matched', 0)} / {subject_kind.get('matched', 0)}, "
                  f"{run.sink.get('unknown', 0)}, {run.sink.get('ignored', 0)}"
                  + (f", {run.sink_errors} posts failed" if run.sink_errors else ""))
        lines.append(f"| {run.name} | {sum(1 for a in legit if a.umid)} / {sum(1 for a in pump if a.umid)} "
                     f"| {refused} of {len(legit)} | {', '.join(f'{k}: {v}' for k, v in sorted(other.items())) or '-'} "
                     f"| {events} | {success} / {failure} | {len(missing)} of {len(accepted)} "
                     f"| {max(delays, default=0):.0f}s | pump success {wrong_pump}, used but failure {late_users} |")
        verdicts.append((run, refused, missing, delays))
    (_, _, mixed_missing, mixed_delays), (_, clean_refused, clean_missing, clean_delays) = verdicts
    delays = mixed_delays + clean_delays
    feedback_ok = not mixed_missing and not clean_missing and max(delays, default=0) <= FEEDBACK_LIMIT
    targets = [
        (worst_before <= 50, f"<= 50 pumping SMS per attacked prefix before it is blocked "
                             f"(worst: {'never blocked' if worst_before >= 10**9 else worst_before})"),
        (clean_refused == 0, f"0 legitimate SMS refused on the legitimate-only trace ({clean_refused})"),
        (feedback_ok, f"every accepted SMS's feedback posted within 15 minutes "
                      f"({len(mixed_missing) + len(clean_missing)} without, max {max(delays, default=0):.0f}s; "
                      f"here failure_after {FAILURE_AFTER}s + {FEEDBACK_SLACK:g}s slack bounds the wait)"),
    ]
    lines.append("")
    lines += [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in targets]
    return "\n".join(lines), all(ok for ok, _ in targets)


async def phase_b(seed: int) -> bool:
    """Phase B: the mixed trace and the legitimate-only one, each through its own relay process
    (one subaccount each) on one 8x8 emulator, at the same time."""
    import tempfile

    sys.path.insert(0, str(ROOT / "sandbox"))
    from otp_sandbox.eightbyeight.launcher import EightByEightEmulator
    from otp_sandbox.pki import CertificateAuthority

    trace = RELAY_TRACE
    mixed_sends = events(trace, seed, True, mobile, RELAY_ATTACKED)
    clean_sends = events(dataclasses.replace(trace, minutes=RELAY_CLEAN_MINUTES), seed + 100, False, mobile)
    print(f"\nphase B: the real relay (otp-relay subprocess, --conversion true, --conversion-blocking enforce, "
          f"--conversion-failure-after {FAILURE_AFTER}s: shortened from 10m so the run is short; the rule's "
          f"other settings are the relay's defaults, maturity 45 s) on the 8x8 emulator (TLS, loopback, "
          f"tracking on the subaccount); the sink posted every {BATCH_EVERY:g} s in JSONARRAY batches.")
    print(f"mixed trace: {trace.minutes} min real time, ~{trace.legit_per_minute:g} legit SMS/min "
          f"(x{trace.burst_factor:g} for {trace.burst_minutes:g} min at minute {trace.burst_every:g}), "
          f"{len(RELAY_ATTACKED)} attacked ranges at {trace.attack_per_minute:g}/min each from minute "
          f"{trace.attack_start:g} for {trace.attack_minutes:g} min, every {trace.attack_stride}th number; "
          f"legit-only trace: {RELAY_CLEAN_MINUTES} min (seed {seed + 100}), on a second relay at the same time; "
          f"seed {seed}; half the users matched by number, half by subject", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-fraud-") as tmp:
        work = Path(tmp)
        ca = CertificateAuthority(work / "ca")
        trust = ca.trust_bundle(work / "ca" / "trust-bundle.pem")
        emulator = EightByEightEmulator.start(ca, work / "sms-emulator")
        relays = []
        try:
            mixed_relay = start_relay(work / "mixed", emulator, trust, "bench_mixed", "bench-api-key-mixed-0001")
            relays.append(mixed_relay)
            clean_relay = start_relay(work / "clean", emulator, trust, "bench_clean", "bench-api-key-clean-0001")
            relays.append(clean_relay)
            mixed, clean = await asyncio.wait_for(asyncio.gather(
                replay(mixed_relay, emulator, "mixed", "bench_mixed", mixed_sends, seed),
                replay(clean_relay, emulator, "legit only", "bench_clean", clean_sends, seed + 100)),
                PHASE_B_LIMIT)
        finally:
            for relay in relays:
                relay.stop()
            emulator.stop()
    table, ok = relay_report(mixed, clean, RELAY_ATTACKED)
    print(table)
    print(f"({time.monotonic() - started:.0f} s)", flush=True)
    return ok


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
    parser.add_argument("--mode", choices=("all", "rule", "relay"), default="all",
                        help="all: phase A then phase B (default); rule: A only; relay: B only")
    parser.add_argument("--relay", dest="mode", action="store_const", const="relay", help="--mode relay")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--minutes", type=int, default=120, help="simulated minutes (at most 600)")
    parser.add_argument("--attack-per-minute", type=float, default=30.0)
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    args = parser.parse_args()
    if not 10 <= args.minutes <= 600:
        parser.error("--minutes must be 10-600")
    if args.mode in ("all", "rule"):
        asyncio.run(phase_a(args))
    if args.mode in ("all", "relay") and not asyncio.run(phase_b(args.seed)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
