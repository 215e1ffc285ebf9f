"""Prometheus metrics of the operator (never labelled with secret values or phone numbers)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "otp_operator_reconciles_total", "Channel reconciles by result (ok, progressing or the failure reason).",
    ["result"],
)
AUTH0_CALLS = Counter(
    "otp_operator_auth0_calls_total", "Auth0 sync calls by operation (ensure, remove, log-stream) and outcome.",
    ["operation", "outcome"],
)
AUTH0_WRITES = Counter("otp_operator_auth0_writes_total", "Write requests the operator made to Auth0.")
KUBE_REQUESTS = Counter(
    "otp_operator_kube_requests_total", "Kubernetes API requests made by reconciles (not kopf's watches).",
    ["verb"],
)
TIME_TO_READY = Histogram(
    "otp_operator_time_to_ready_seconds", "From a channel generation first seen to Ready=True.",
    buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600),
)
CHANNELS = Gauge("otp_operator_channels", "Channels handled by this operator instance.")
READY_CHANNELS = Gauge("otp_operator_ready_channels", "Channels whose Ready condition is True.")

# Per channel, from its status (set by the delivery timer; removed when the channel is deleted).
CHANNEL_READY = Gauge("otp_operator_channel_ready", "1 when the channel's Ready condition is True.",
                      ["namespace", "channel"])
CHANNEL_AUTH0_SYNCED = Gauge("otp_operator_channel_auth0_synced",
                             "1 when the channel's Auth0Synced condition is True.", ["namespace", "channel"])
SIGNING_KEY_ROTATION_SECONDS = Gauge(
    "otp_operator_signing_key_rotation_seconds",
    "Seconds the channel's signing-key rotation has been in its current phase (0 when stable).",
    ["namespace", "channel"])
CHANNEL_DELIVERY_RATIO = Gauge(
    "otp_operator_channel_delivery_ratio",
    "Delivered / (delivered + undelivered) receipts in the relay's last window (status.delivery.ratio).",
    ["namespace", "channel"])

CHANNEL_CANARY_DELIVERING = Gauge(
    "otp_operator_channel_canary_delivering",
    "The channel's Delivering condition (spec.canary): 1 True, 0 False, -1 Unknown; absent without a canary.",
    ["namespace", "channel"])
CHANNEL_CONVERSION_RATIO = Gauge(
    "otp_operator_channel_conversion_ratio",
    "Codes used / codes with an outcome in the relay's conversion figures (status.delivery.conversion.rate); "
    "absent without spec.conversion or before the first outcome.",
    ["namespace", "channel"])


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on 0.0.0.0:port in a background thread."""
    start_http_server(port, registry=registry)
