"""Did the OTPs arrive? The relay's delivery summary in ``status.delivery``, an Event when the
delivered ratio drops below ``spec.policy.deliveryRatioThreshold``, and per-channel gauges for
the alerts (Ready, Auth0 synced, signing-key rotation age, delivery ratio).

A kopf timer, apart from the reconcile: every ``INTERVAL`` seconds it asks the relay's admin
listener (through the channel's Service) for ``/v1/delivery-summary``. Deciding is pure
(``delivery_status``, ``ratio_dropped``, ``channel_gauges``); the timer only reads and writes.
A relay that does not answer changes nothing (the last summary stays, with its time).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from . import metrics, names, rotation, status
from .spec import SpecError, parse_channel

INTERVAL = 60.0
TIMEOUT = 3.0
MIN_FINAL_RECEIPTS = 5  # fewer final receipts in the window say nothing about a ratio
FIELDS = ("windowSeconds", "sent", "delivered", "undelivered", "ratio", "topFailureReason")
CHANNELS = (names.GROUP, names.VERSION, names.PLURAL)
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
    summary: dict[str, Any] = {}
    for key in FIELDS:
        value = data.get(key)
        if key == "topFailureReason":
            if isinstance(value, str) and value:
                summary[key] = value[:64]
        elif key == "ratio":
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                summary[key] = float(value)
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            summary[key] = value
    return summary


def delivery_status(summary: Mapping[str, Any], previous: Mapping[str, Any] | None, stamp: str) -> dict[str, Any] | None:
    """The new ``status.delivery``, or None when the numbers did not change (no write)."""
    if previous and all(previous.get(key) == summary.get(key) for key in FIELDS):
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
    return values


def _set_gauges(namespace: str, name: str, values: Mapping[str, float]) -> None:
    metrics.CHANNEL_READY.labels(namespace, name).set(values["ready"])
    metrics.CHANNEL_AUTH0_SYNCED.labels(namespace, name).set(values["auth0_synced"])
    metrics.SIGNING_KEY_ROTATION_SECONDS.labels(namespace, name).set(values["rotation_seconds"])
    if "delivery_ratio" in values:
        metrics.CHANNEL_DELIVERY_RATIO.labels(namespace, name).set(values["delivery_ratio"])


def forget(namespace: str, name: str) -> None:
    for gauge in (metrics.CHANNEL_READY, metrics.CHANNEL_AUTH0_SYNCED, metrics.SIGNING_KEY_ROTATION_SECONDS,
                  metrics.CHANNEL_DELIVERY_RATIO):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass


@kopf.timer(*CHANNELS, interval=INTERVAL, initial_delay=INTERVAL)
async def poll_delivery(namespace: str, name: str, spec: Mapping[str, Any], body: kopf.Body,
                        patch: kopf.Patch, **_: Any) -> None:
    current = dict(body.get("status") or {})
    try:
        ch = parse_channel(namespace, name, spec)
    except SpecError:
        return
    if ch.suspend or ch.relay.replicas == 0:
        _set_gauges(namespace, name, channel_gauges(current, time.time()))
        return
    previous = current.get("delivery")
    try:
        summary = await fetch_summary(summary_url(namespace, name))
    except (httpx.HTTPError, ValueError) as error:
        log.debug("no delivery summary for %s/%s: %s", namespace, name, type(error).__name__)
    else:
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
    _set_gauges(namespace, name, channel_gauges(current, time.time()))


@kopf.on.event(*CHANNELS)
def channel_gone(type: str, namespace: str, name: str, **_: Any) -> None:
    if type == "DELETED":
        forget(namespace, name)
