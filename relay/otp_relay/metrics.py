"""Prometheus metrics of one relay process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

OUTCOMES = (
    "accepted", "bad_request", "unauthorized", "forbidden", "too_large", "unsupported_media_type",
    "unprocessable", "rate_limited", "upstream_rejected", "upstream_unavailable", "not_ready",
    "internal_error",
)


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        requests = Counter("otp_relay_requests", "Send requests by outcome", ["outcome"],
                           registry=self.registry)
        self._outcomes = {name: requests.labels(name) for name in OUTCOMES}
        self.upstream_latency = Histogram(
            "otp_relay_upstream_request_duration_seconds", "Duration of each request to 8x8",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._upstream_status = Counter(
            "otp_relay_upstream_responses", "8x8 answers by HTTP status (or connect_error, "
            "no_answer, tls_error)", ["status"], registry=self.registry)
        self._status_children: dict[str, Counter] = {}
        limits = Counter("otp_relay_limit_rejections", "Requests refused by a limit", ["limit"],
                         registry=self.registry)
        self.recipient_limited = limits.labels("recipient")
        self.global_limited = limits.labels("global")
        self._reloads = Counter("otp_relay_key_reloads", "Key file loads", ["file", "result"],
                                registry=self.registry)
        self.ready = Gauge("otp_relay_ready", "1 when the API key and signing keys are loaded",
                           registry=self.registry)

    def outcome(self, name: str) -> None:
        self._outcomes[name].inc()

    def upstream(self, status: str, seconds: float) -> None:
        child = self._status_children.get(status)
        if child is None:
            child = self._status_children[status] = self._upstream_status.labels(status)
        child.inc()
        self.upstream_latency.observe(seconds)

    def key_reload(self, file: str, ok: bool) -> None:
        self._reloads.labels(file, "ok" if ok else "error").inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
