"""Prometheus metrics of the operator (never labelled with secret values or phone numbers)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "otp_operator_reconciles_total", "Channel reconciles by result (ok, progressing or the failure reason).",
    ["result"],
)
AUTH0_CALLS = Counter(
    "otp_operator_auth0_calls_total", "Auth0 sync calls by operation (ensure, remove) and outcome.",
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


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on 0.0.0.0:port in a background thread."""
    start_http_server(port, registry=registry)
