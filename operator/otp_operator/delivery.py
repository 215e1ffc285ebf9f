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

from . import metrics, names, rotation, status
from .auth0.errors import Auth0Error
from .secrets import signing_keys
from .spec import ChannelSpec, SpecError, parse_channel

INTERVAL = 60.0
TIMEOUT = 3.0
RELAY_CANARY_TIMEOUT = 10.0  # the relay answers a send within 6 s
MIN_FINAL_RECEIPTS = 5  # fewer final receipts in the window say nothing about a ratio
FIELDS = ("windowSeconds", "sent", "delivered", "undelivered", "ratio", "topFailureReason")
CHANNEL_FIELDS = FIELDS[1:]  # per delivery channel (text, voice): the window is the summary's
CANARY_STATES = ("sent", "rejected", "delivered", "undelivered")
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
    return (f"http://{names.relay_name(ch.name)}.{ch.namespace}.svc:{names.SERVICE_PORT}"
            f"{ch.relay.path_prefix}{names.RELAY_PUBLIC_PATH}")


def relay_canary_request(to: str, key: str, now: float) -> tuple[dict[str, str], bytes]:
    """Headers and body of the canary the operator sends itself in the legacy modes: the request
    the registered code makes (signed the same way), with a text that differs at every try so
    the relay's idempotency never takes it for a replay."""
    body = json.dumps({"recipient": to, "text": f"otp-relay canary {_stamp(now)}",
                       "message_type": "otp_verify", "delivery_method": "text"}).encode()
    timestamp = str(int(now))
    return ({"Content-Type": "application/json", "X-Otp-Timestamp": timestamp,
             "X-Otp-Signature": signing.sign(key, timestamp, body)}, body)


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
    operator posts the registered code's request to the relay itself, signed with the oldest key
    in the Secret (the one every relay replica still accepts during a rotation)."""
    assert ch.canary is not None
    keys = signing_keys(await runtime.read("v1", "Secret", ch.namespace, names.signing_key_secret_name(ch.name)))
    if not keys:
        return False, None
    headers, body = relay_canary_request(ch.canary.to, keys[0], time.time())
    try:
        answer = await _client().post(relay_messages_url(ch), content=body, headers=headers,
                                      timeout=RELAY_CANARY_TIMEOUT)
    except httpx.HTTPError as error:
        return True, f"no answer ({type(error).__name__})"
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


def _stamp(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime(_STAMP)


def delivery_status(summary: Mapping[str, Any], previous: Mapping[str, Any] | None, stamp: str) -> dict[str, Any] | None:
    """The new ``status.delivery``, or None when the numbers did not change (no write)."""
    if previous and all(previous.get(key) == summary.get(key) for key in (*FIELDS, "channels", "voiceWebhook")):
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
                  metrics.CHANNEL_DELIVERY_RATIO, metrics.CHANNEL_CANARY_DELIVERING):
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
            if ratio_dropped(new, previous, ch.policy.delivery_ratio_threshold):
                kopf.warn(dict(body), reason="DeliveryRatioLow",
                          message=f"{new['delivered']} of {new['delivered'] + new['undelivered']} messages "
                                  f"delivered in the last {new.get('windowSeconds', 0) // 60} minutes "
                                  f"(below {ch.policy.delivery_ratio_threshold:.0%}); most frequent failure: "
                                  f"{new.get('topFailureReason') or 'unknown'}")
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
