"""Did the OTPs arrive? The relay's delivery summary in ``status.delivery``, an Event when the
delivered ratio drops below ``spec.policy.deliveryRatioThreshold``, and per-channel gauges for
the alerts (Ready, Auth0 synced, signing-key rotation age, delivery ratio, canary).

The live canary (``spec.canary``): when one is due and the channel is Ready, the timer asks
Auth0 to send its test message to the canary number (phone-provider mode:
``POST /branding/phone/providers/{id}/try``, through the tenant's limiter; the legacy modes have
no such endpoint, so the operator posts the registered code's signed request to the relay
itself) and records when in ``status.canary.lastTryTime`` (with the refusal, if any); on later ticks it copies
the relay's record of that canary send (the summary's ``canary``) into ``status.canary.result``,
or notes that the relay was never called. The reconcile turns ``status.canary`` into the
``Delivering`` condition (``status.delivering_verdict``); this timer never writes conditions.

With ``spec.conversion`` the summary's ``conversion`` (whether codes were used, per country and
number prefix, the conversion rule's active blocks, 8x8 feedback) goes to
``status.delivery.conversion`` and the ``otp_operator_channel_conversion_ratio`` gauge; the
timer also processes the ``otprelay.io/lift-conversion-block`` annotation (``conversion_lift``),
posting each lift to the relay signed like the legacy canary.

A kopf timer, apart from the reconcile: every ``INTERVAL`` seconds it asks the relay's admin
listener (through the channel's Service) for ``/v1/delivery-summary``. Deciding is pure
(``delivery_status``, ``ratio_dropped``, ``channel_gauges``); the timer only reads and writes.
A relay that does not answer changes nothing (the last summary stays, with its time).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from otp_relay import signing
from otp_relay.metrics import CHANNELS as DELIVERY_CHANNELS
from otp_relay.webhook import STATES as VOICE_WEBHOOK_STATES

from . import conversion_lift, metrics, names, rotation, status
from .auth0.errors import Auth0Error
from .secrets import signing_keys
from .spec import CONVERSION_MODES, ChannelSpec, SpecError, parse_channel

INTERVAL = 60.0
TIMEOUT = 3.0
RELAY_CANARY_TIMEOUT = 10.0  # the relay answers a send within 6 s
RELAY_LIFT_TIMEOUT = 5.0
MIN_FINAL_RECEIPTS = 5  # fewer final receipts in the window say nothing about a ratio
FIELDS = ("windowSeconds", "sent", "delivered", "undelivered", "ratio", "topFailureReason")
CHANNEL_FIELDS = FIELDS[1:]  # per delivery channel (text, voice): the window is the summary's
CANARY_STATES = ("sent", "rejected", "delivered", "undelivered")
MAX_WORST = 5  # countries and number prefixes in status.delivery.conversion
MAX_BLOCKS = 50
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"
_CODE = re.compile(r"^[A-Za-z0-9_./-]{1,32}$")
CHANNELS = names.CHANNEL_RESOURCE
log = logging.getLogger("otp_operator.delivery")


def summary_url(namespace: str, channel: str) -> str:
    return (f"http://{names.relay_name(channel)}.{namespace}.svc:{names.RELAY_ADMIN_PORT}"
            f"{names.RELAY_DELIVERY_SUMMARY_PATH}")


_http: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


def _client() -> httpx.AsyncClient:
    """One client for every poll (of this event loop): a new one per poll builds a TLS context
    (loads the CA bundle), which with hundreds of channels cost more CPU than every reconcile."""
    global _http
    loop = asyncio.get_running_loop()
    if _http is None or _http[0] is not loop:
        _http = (loop, httpx.AsyncClient(timeout=TIMEOUT))
    return _http[1]


@kopf.on.cleanup()
async def close_client(**_: Any) -> None:
    global _http
    if _http is not None:
        await _http[1].aclose()
        _http = None


async def fetch_summary(url: str) -> dict[str, Any]:
    """The relay's summary, keeping only the known fields of the right types; raises
    ``httpx.HTTPError`` or ``ValueError`` when there is none."""
    answer = await _client().get(url)
    answer.raise_for_status()
    data = answer.json()
    if not isinstance(data, dict):
        raise ValueError("the delivery summary is not a JSON object")
    summary = _figures(data, FIELDS)
    per_channel = data.get("channels")
    if isinstance(per_channel, dict):
        channels = {channel: _figures(per_channel[channel], CHANNEL_FIELDS) for channel in DELIVERY_CHANNELS
                    if isinstance(per_channel.get(channel), dict)}
        if channels:
            summary["channels"] = channels
    if data.get("voiceWebhook") in VOICE_WEBHOOK_STATES:
        summary["voiceWebhook"] = data["voiceWebhook"]
    canary = canary_record(data.get("canary"))
    if canary is not None:
        summary["canary"] = canary
    conversion = conversion_record(data.get("conversion"))
    if conversion is not None:
        summary["conversion"] = conversion
    return summary


def _figures(data: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The known ``fields`` of the relay's figures, each only when of the right type."""
    figures: dict[str, Any] = {}
    for key in fields:
        value = data.get(key)
        if key == "topFailureReason":
            if isinstance(value, str) and value:
                figures[key] = value[:64]
        elif key == "ratio":
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                figures[key] = float(value)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            figures[key] = value
    return figures


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else None


def _rate(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return round(float(value), 4)
    return None


def _iso(value: Any) -> str | None:
    """An ISO 8601 time from the relay as ``_STAMP`` (UTC), or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.astimezone(datetime.timezone.utc).strftime(_STAMP)


def _items(value: Any) -> list[Any]:
    return value[:1000] if isinstance(value, list) else []


def conversion_record(value: Any) -> dict[str, Any] | None:
    """``status.delivery.conversion`` from the summary's ``conversion``: the totals, the worst
    countries and number prefixes (prefixes only here, never as metric labels), the active
    blocks, the 8x8 feedback and the log stream's last event; None without conversion."""
    if not isinstance(value, dict) or value.get("enabled") is False:
        return None
    record: dict[str, Any] = {}
    for field in ("sent", "success", "failure", "pending"):
        if (count := _count(value.get(field))) is not None:
            record[field] = count
    if (rate := _rate(value.get("rate"))) is not None:
        record["rate"] = rate
    countries = value.get("countries")
    if isinstance(countries, dict):
        worst: list[dict[str, Any]] = []
        for country, figures in countries.items():
            if isinstance(country, str) and _COUNTRY.match(country) and isinstance(figures, dict):
                rate = _rate(figures.get("rate"))
                if rate is not None:
                    worst.append({"country": country, "sent": _count(figures.get("sent")) or 0, "rate": rate})
        worst.sort(key=lambda c: (c["rate"], -c["sent"], c["country"]))
        if worst:
            record["worstCountries"] = worst[:MAX_WORST]
    rule: dict[str, Any] = value["rule"] if isinstance(value.get("rule"), dict) else {}
    if rule.get("mode") in CONVERSION_MODES:
        record["mode"] = rule["mode"]
    prefixes: list[dict[str, Any]] = []
    for item in _items(rule.get("prefixes")):
        if isinstance(item, dict) and isinstance(item.get("key"), str) and conversion_lift.PREFIX.match(item["key"]):
            rate = _rate(item.get("rate"))
            if rate is not None:
                prefixes.append({"prefix": item["key"], "sent": _count(item.get("sent")) or 0,
                                 "converted": _count(item.get("converted")) or 0, "rate": rate})
    prefixes.sort(key=lambda p: (p["rate"], -p["sent"], p["prefix"]))
    if prefixes:
        record["worstPrefixes"] = prefixes[:MAX_WORST]
    blocks: list[dict[str, Any]] = []
    for item in _items(rule.get("blocks")):
        if not isinstance(item, dict) or item.get("kind") not in ("prefix", "country"):
            continue
        key, until = item.get("key"), _iso(item.get("until"))
        pattern = conversion_lift.PREFIX if item["kind"] == "prefix" else _COUNTRY
        if isinstance(key, str) and pattern.match(key) and until is not None:
            block: dict[str, Any] = {"key": key, "kind": item["kind"], "until": until,
                                     "enforced": item.get("enforced") is True}
            if (level := _count(item.get("level"))) is not None:
                block["level"] = level
            blocks.append(block)
    if blocks:
        record["blocks"] = sorted(blocks, key=lambda b: b["until"])[:MAX_BLOCKS]
    feedback = value.get("feedback")
    if isinstance(feedback, dict):
        counts = {field: count for field in ("posted", "failed")
                  if (count := _count(feedback.get(field))) is not None}
        if counts:
            record["feedback"] = counts
    log_stream = value.get("log_stream")
    if isinstance(log_stream, dict) and (last := _iso(log_stream.get("last_event"))) is not None:
        record["lastLogEvent"] = last
    return record


def started_blocks(previous: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The blocks of ``new`` (``status.delivery.conversion``) that ``previous`` did not have: a new
    key, or the same key blocked again (another ``until``): one Event each, not one per poll."""
    seen = {(b.get("key"), b.get("until")) for b in (previous or {}).get("blocks") or ()}
    return [b for b in (new or {}).get("blocks") or () if (b.get("key"), b.get("until")) not in seen]


def block_event(block: Mapping[str, Any]) -> tuple[bool, str, str]:
    """(warning, reason, message) of a block that started."""
    what = f"number prefix {block['key']}" if block["kind"] == "prefix" else f"country {block['key']}"
    level = f", block {block['level']}" if block.get("level") else ""
    lift = f"lift it with the annotation {names.ANNOTATION_LIFT_CONVERSION_BLOCK}={block['key']}"
    if block.get("enforced"):
        return True, "ConversionBlocked", (f"SMS to {what} are refused until {block['until']}{level}: its "
                                           f"codes are not being used (SMS pumping?); {lift}")
    return False, "ConversionBlockMonitored", (f"monitor mode: the conversion rule would refuse SMS to {what} "
                                               f"until {block['until']}{level} (nothing is refused)")


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.datetime.strptime(stamp, _STAMP).replace(tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def canary_record(value: Any) -> dict[str, Any] | None:
    """The relay's record of the canary's last send, only known fields of known shapes."""
    if not isinstance(value, dict) or _epoch(value.get("sentAt")) is None or value.get("state") not in CANARY_STATES:
        return None
    record: dict[str, Any] = {"sentAt": value["sentAt"], "state": value["state"]}
    code, reason, seconds = value.get("errorCode"), value.get("reason"), value.get("deliverySeconds")
    if isinstance(code, str) and _CODE.match(code):
        record["errorCode"] = code
    if isinstance(reason, str) and reason:
        record["reason"] = reason[:64]
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 10**6:
        record["deliverySeconds"] = round(float(seconds), 3)
    return record


def canary_due(canary: Mapping[str, Any] | None, every_seconds: int, now: float) -> bool:
    """The first canary at once, then one every ``every_seconds``."""
    tried = _epoch((canary or {}).get("lastTryTime"))
    return tried is None or now - tried >= every_seconds


def canary_tried(now: float, error: str | None) -> dict[str, Any]:
    """``status.canary`` right after asking Auth0 (a new attempt: nothing seen of it yet)."""
    tried: dict[str, Any] = {"lastTryTime": _stamp(now)}
    if error:
        tried["tryError"] = error
    return tried


def canary_observed(canary: Mapping[str, Any], record: Mapping[str, Any] | None, now: float) -> dict[str, Any] | None:
    """``status.canary`` once the relay's summary was read, or None when nothing changed. Only a
    relay record of a send after the try counts (an older one is the previous canary's)."""
    tried = _epoch(canary.get("lastTryTime"))
    if tried is None:
        return None
    new = dict(canary)
    sent = _epoch((record or {}).get("sentAt"))
    if record is not None and sent is not None and sent >= tried - status.CANARY_SKEW:
        new["result"] = dict(record)
        new.pop("relayCalled", None)
    elif not new.get("result") and not new.get("tryError") and now - tried > status.CANARY_RELAY_BOUND:
        new["relayCalled"] = False
    return None if new == dict(canary) else new


def _try_error(error: Auth0Error) -> str:
    """What Auth0 answered, from bounded parts (its status and errorCode, or our reason)."""
    code = error.error_code if error.error_code and _CODE.match(error.error_code) else error.reason
    return f"{error.status} {code}" if error.status else f"no answer ({code})"


def relay_messages_url(ch: ChannelSpec) -> str:
    """The relay's public path through its Service (what the registered code reaches through the
    public URL)."""
    return _relay_public_url(ch, names.RELAY_PUBLIC_PATH)


def relay_lift_url(ch: ChannelSpec) -> str:
    """The relay's conversion-lift route through its Service (signed like a send)."""
    return _relay_public_url(ch, names.RELAY_CONVERSION_LIFT_PATH)


def _relay_public_url(ch: ChannelSpec, path: str) -> str:
    return f"http://{names.relay_name(ch.name)}.{ch.namespace}.svc:{names.SERVICE_PORT}{ch.relay.path_prefix}{path}"


def signed_request(payload: Mapping[str, Any], key: str, now: float) -> tuple[dict[str, str], bytes]:
    """Headers and body of a request to the relay's public routes, signed the way the registered
    code signs its sends."""
    body = json.dumps(payload).encode()
    timestamp = str(int(now))
    return ({"Content-Type": "application/json", "X-Otp-Timestamp": timestamp,
             "X-Otp-Signature": signing.sign(key, timestamp, body)}, body)


def relay_canary_request(to: str, key: str, now: float) -> tuple[dict[str, str], bytes]:
    """The canary the operator sends itself in the legacy modes: the request the registered code
    makes, with a text that differs at every try so the relay's idempotency never takes it for a
    replay."""
    return signed_request({"recipient": to, "text": f"otp-relay canary {_stamp(now)}",
                           "message_type": "otp_verify", "delivery_method": "text"}, key, now)


async def _post_signed(runtime: Any, ch: ChannelSpec, url: str, request: Any, timeout: float) -> httpx.Response | None:
    """POST ``request(key, now)`` (headers, body) to the relay, signed with the oldest key in the
    Secret (the one every relay replica still accepts during a rotation); None without a key.
    Raises ``httpx.HTTPError`` when the relay does not answer."""
    keys = signing_keys(await runtime.read("v1", "Secret", ch.namespace, names.signing_key_secret_name(ch.name)))
    if not keys:
        return None
    headers, body = request(keys[0], time.time())
    return await _client().post(url, content=body, headers=headers, timeout=timeout)


async def _ask_auth0(runtime: Any, ch: ChannelSpec, current: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(asked, Auth0's refusal): phone-provider mode, Auth0's test message through the provider."""
    assert ch.canary is not None
    provider = (current.get("auth0") or {}).get("providerId")
    credentials = runtime.memory(ch.namespace, ch.name).auth0.last_credentials
    if not (provider and credentials):
        return False, None
    try:
        found = await runtime.auth0.try_phone_provider(credentials, provider, ch.canary.to)
    except Auth0Error as error:
        return True, _try_error(error)
    return True, None if found else "404 phone_provider_not_found"


async def _ask_relay(runtime: Any, ch: ChannelSpec) -> tuple[bool, str | None]:
    """(asked, the relay's refusal): the legacy modes have no Auth0 test endpoint, so the
    operator posts the registered code's request to the relay itself."""
    assert ch.canary is not None
    to = ch.canary.to
    try:
        answer = await _post_signed(runtime, ch, relay_messages_url(ch),
                                    lambda key, now: relay_canary_request(to, key, now), RELAY_CANARY_TIMEOUT)
    except httpx.HTTPError as error:
        return True, f"no answer ({type(error).__name__})"
    if answer is None:
        return False, None
    return True, None if answer.status_code in (200, 202) else f"HTTP {answer.status_code}"


async def _canary_tick(runtime: Any, ch: ChannelSpec, current: Mapping[str, Any],
                       record: Mapping[str, Any] | None, summary_read: bool) -> dict[str, Any] | None:
    """Send a canary when one is due, else look at what the relay recorded of it; the new
    ``status.canary``, or None when it stays."""
    assert ch.canary is not None
    canary, now = current.get("canary") or {}, time.time()
    if not canary_due(canary, ch.canary.every_seconds, now):
        return canary_observed(canary, record, now) if summary_read else None
    ready = (status.find(current.get("conditions"), status.READY) or {}).get("status") == "True"
    if not ready or runtime is None:
        return None
    via_auth0 = status.canary_through_auth0(ch.auth0.integration)
    asked, problem = await (_ask_auth0(runtime, ch, current) if via_auth0 else _ask_relay(runtime, ch))
    if not asked:
        return None
    log.info("canary for %s/%s to %s: %s %s", ch.namespace, ch.name, ch.canary.masked,
             "Auth0" if via_auth0 else "the relay", "accepted it" if problem is None else f"answered {problem}")
    return canary_tried(now, problem)


async def _lift_one(runtime: Any, ch: ChannelSpec, key: str) -> tuple[str, str | None]:
    try:
        answer = await _post_signed(runtime, ch, relay_lift_url(ch),
                                    lambda signing_key, now: signed_request({"key": key}, signing_key, now),
                                    RELAY_LIFT_TIMEOUT)
    except httpx.HTTPError as error:
        return conversion_lift.outcome(None, None, f"no answer ({type(error).__name__})")
    if answer is None:
        return conversion_lift.outcome(None, None, "no signing key in the channel's Secret yet")
    try:
        parsed = answer.json() if answer.status_code == 200 and len(answer.content) <= 4096 else None
    except ValueError:
        parsed = None
    return conversion_lift.outcome(answer.status_code, parsed)


async def _lift_tick(runtime: Any, ch: ChannelSpec, body: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any] | None:
    """Process the lift annotation's value when it is new; the new ``status.conversionLift``, or
    None when there is nothing to do."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    lift = conversion_lift.pending(annotations.get(names.ANNOTATION_LIFT_CONVERSION_BLOCK), current.get("conversionLift"))
    if lift is None or runtime is None:
        return None
    if lift.problem is None and ch.conversion is None:
        lift = conversion_lift.Lift(lift.marker, (), "spec.conversion is not set: there are no conversion blocks to lift")
    if lift.problem is not None:
        kopf.warn(dict(body), reason="ConversionLiftInvalid", message=lift.problem)
        return conversion_lift.record(lift, [], _stamp(time.time()))
    results: list[dict[str, Any]] = []
    for key in lift.keys:
        result, detail = await _lift_one(runtime, ch, key)
        results.append({"key": key, "outcome": result, **({"detail": detail} if detail else {})})
        warning, reason, message = conversion_lift.event(key, result, detail)
        (kopf.warn if warning else kopf.info)(dict(body), reason=reason, message=message)
        log.info("conversion block lift for %s/%s on %s: %s", ch.namespace, ch.name, key, result)
    return conversion_lift.record(lift, results, _stamp(time.time()))


def _stamp(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime(_STAMP)


def delivery_status(summary: Mapping[str, Any], previous: Mapping[str, Any] | None, stamp: str) -> dict[str, Any] | None:
    """The new ``status.delivery``, or None when the numbers did not change (no write)."""
    if previous and all(previous.get(key) == summary.get(key) for key in (*FIELDS, "channels", "voiceWebhook", "conversion")):
        return None
    return {**summary, "observedTime": stamp}


def ratio_dropped(new: Mapping[str, Any], previous: Mapping[str, Any] | None, threshold: float | None) -> bool:
    """True when the ratio is now below the threshold (with enough receipts to tell) and was
    not before: one Event per drop, not one per poll."""
    if threshold is None or new.get("ratio") is None:
        return False
    if int(new.get("delivered", 0)) + int(new.get("undelivered", 0)) < MIN_FINAL_RECEIPTS:
        return False
    if new["ratio"] >= threshold:
        return False
    before = (previous or {}).get("ratio")
    return before is None or before >= threshold


def channel_gauges(body_status: Mapping[str, Any], now: float) -> dict[str, float]:
    """Per-channel gauge values from the channel's status."""
    conditions = body_status.get("conditions") or []
    signing = rotation.SigningState.from_status(body_status.get("signingKey"))
    values = {
        "ready": 1.0 if (status.find(conditions, status.READY) or {}).get("status") == "True" else 0.0,
        "auth0_synced": 1.0 if (status.find(conditions, status.AUTH0_SYNCED) or {}).get("status") == "True" else 0.0,
        "rotation_seconds": max(0.0, now - signing.since) if signing.phase != rotation.STABLE and signing.since else 0.0,
    }
    ratio = (body_status.get("delivery") or {}).get("ratio")
    if ratio is not None:
        values["delivery_ratio"] = float(ratio)
    conversion = (body_status.get("delivery") or {}).get("conversion") or {}
    if conversion.get("rate") is not None:
        values["conversion_ratio"] = float(conversion["rate"])
    delivering = status.find(conditions, status.DELIVERING)
    if delivering is not None:
        values["canary_delivering"] = {"True": 1.0, "False": 0.0}.get(str(delivering.get("status")), -1.0)
    return values


def _set_gauges(namespace: str, name: str, values: Mapping[str, float]) -> None:
    metrics.CHANNEL_READY.labels(namespace, name).set(values["ready"])
    metrics.CHANNEL_AUTH0_SYNCED.labels(namespace, name).set(values["auth0_synced"])
    metrics.SIGNING_KEY_ROTATION_SECONDS.labels(namespace, name).set(values["rotation_seconds"])
    if "delivery_ratio" in values:
        metrics.CHANNEL_DELIVERY_RATIO.labels(namespace, name).set(values["delivery_ratio"])
    if "conversion_ratio" in values:
        metrics.CHANNEL_CONVERSION_RATIO.labels(namespace, name).set(values["conversion_ratio"])
    else:
        _remove(metrics.CHANNEL_CONVERSION_RATIO, namespace, name)
    if "canary_delivering" in values:
        metrics.CHANNEL_CANARY_DELIVERING.labels(namespace, name).set(values["canary_delivering"])
    else:
        _remove(metrics.CHANNEL_CANARY_DELIVERING, namespace, name)


def _remove(gauge: Any, namespace: str, name: str) -> None:
    try:
        gauge.remove(namespace, name)
    except KeyError:
        pass


def forget(namespace: str, name: str) -> None:
    for gauge in (metrics.CHANNEL_READY, metrics.CHANNEL_AUTH0_SYNCED, metrics.SIGNING_KEY_ROTATION_SECONDS,
                  metrics.CHANNEL_DELIVERY_RATIO, metrics.CHANNEL_CANARY_DELIVERING, metrics.CHANNEL_CONVERSION_RATIO):
        _remove(gauge, namespace, name)


@kopf.timer(*CHANNELS, interval=INTERVAL, initial_delay=INTERVAL)
async def poll_delivery(namespace: str, name: str, spec: Mapping[str, Any], body: kopf.Body,
                        patch: kopf.Patch, memo: Any = None, **_: Any) -> None:
    current = dict(body.get("status") or {})
    try:
        ch = parse_channel(namespace, name, spec)
    except SpecError:
        return
    if ch.suspend or ch.relay.replicas == 0:
        _set_gauges(namespace, name, channel_gauges(current, time.time()))
        return
    previous = current.get("delivery")
    record, read = None, False
    try:
        summary = await fetch_summary(summary_url(namespace, name))
    except (httpx.HTTPError, ValueError) as error:
        log.debug("no delivery summary for %s/%s: %s", namespace, name, type(error).__name__)
    else:
        record, read = summary.pop("canary", None), True
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        new = delivery_status(summary, previous, stamp)
        if new is not None:
            patch.status["delivery"] = new
            current["delivery"] = new
            for block in started_blocks((previous or {}).get("conversion"), new.get("conversion")):
                warning, reason, message = block_event(block)
                (kopf.warn if warning else kopf.info)(dict(body), reason=reason, message=message)
            if ratio_dropped(new, previous, ch.policy.delivery_ratio_threshold):
                kopf.warn(dict(body), reason="DeliveryRatioLow",
                          message=f"{new['delivered']} of {new['delivered'] + new['undelivered']} messages "
                                  f"delivered in the last {new.get('windowSeconds', 0) // 60} minutes "
                                  f"(below {ch.policy.delivery_ratio_threshold:.0%}); most frequent failure: "
                                  f"{new.get('topFailureReason') or 'unknown'}")
    lifted = await _lift_tick(getattr(memo, "runtime", None), ch, body, current)
    if lifted is not None:
        patch.status["conversionLift"] = lifted
        current["conversionLift"] = lifted
    if ch.canary is not None:
        canary = await _canary_tick(getattr(memo, "runtime", None), ch, current, record, read)
        if canary is not None and read and canary.get("lastTryTime") != (current.get("canary") or {}).get("lastTryTime"):
            # just asked: Auth0 runs the action before it answers, so the relay may know already
            try:
                again = (await fetch_summary(summary_url(namespace, name))).get("canary")
            except (httpx.HTTPError, ValueError):
                again = None
            canary = canary_observed(canary, again, time.time()) or canary
        if canary is not None:  # the reconcile turns it into Delivering (the channel's event wakes it)
            patch.status["canary"] = canary
            current["canary"] = canary
    _set_gauges(namespace, name, channel_gauges(current, time.time()))


@kopf.on.event(*CHANNELS)
async def channel_gone(type: str, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        forget(namespace, name)
