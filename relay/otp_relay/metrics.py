"""Prometheus metrics of one relay process (its own registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import canary, webhook
from .policy import RULES

OUTCOMES = (
    "accepted", "bad_request", "unauthorized", "forbidden", "too_large", "unsupported_media_type",
    "unprocessable", "rate_limited", "upstream_rejected", "upstream_unavailable", "not_ready",
    "internal_error", "replayed", "in_flight", "outcome_unknown", "overloaded", "timeout",
    "state_unavailable", "client_abort", "store_full", "canary_capped",
)

CHANNELS = ("text", "voice")  # the delivery methods: the ``channel`` label of send and receipt metrics
LIMITS = ("global", "recipient", "voice_recipient")
DROP_REASONS = ("evicted", "refused", "timeout", "shutdown", "headers_too_large", "body_too_large",
                "slow_body")


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        requests = Counter("otp_relay_requests", "Send requests by outcome", ["outcome"],
                           registry=self.registry)
        self._outcomes = {name: requests.labels(name) for name in OUTCOMES}
        sends = Counter("otp_relay_sends", "Signed, well-formed send requests by delivery method "
                        "(channel: text or voice) and outcome", ["channel", "outcome"],
                        registry=self.registry)
        self._sends = {(channel, name): sends.labels(channel, name) for channel in CHANNELS for name in OUTCOMES}
        self.upstream_latency = Histogram(
            "otp_relay_upstream_request_duration_seconds", "Duration of each request to 8x8",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._upstream_status = Counter(
            "otp_relay_upstream_responses", "8x8 answers by HTTP status (or connect_error, "
            "no_answer, tls_error) and API (channel: text for SMS, voice for callflows)",
            ["status", "channel"], registry=self.registry)
        self._status_children: dict[tuple[str, str], Counter] = {}
        limits = Counter("otp_relay_limit_rejections", "Requests refused by a limit", ["limit"],
                         registry=self.registry)
        self._limits = {name: limits.labels(name) for name in LIMITS}
        self._reloads = Counter("otp_relay_key_reloads", "Key file loads", ["file", "result"],
                                registry=self.registry)
        self.ready = Gauge("otp_relay_ready", "1 when the keys are loaded and the state store answers",
                           registry=self.registry)
        self.state_up = Gauge("otp_relay_state_up", "1 when the state store (Redis, or the process) "
                              "answers", registry=self.registry)
        self.state_errors = Counter("otp_relay_state_errors", "State store calls that failed",
                                    registry=self.registry)
        self.in_flight = Gauge("otp_relay_in_flight_requests", "Send requests being processed",
                               registry=self.registry)
        self.connections = Gauge("otp_relay_open_connections", "Open public connections",
                                 registry=self.registry)
        dropped = Counter("otp_relay_connections_dropped", "Public connections closed by the relay's "
                          "bounds", ["reason"], registry=self.registry)
        self._dropped = {reason: dropped.labels(reason) for reason in DROP_REASONS}
        admin_dropped = Counter("otp_relay_admin_connections_dropped", "Admin connections closed by "
                                "the relay's bounds", ["reason"], registry=self.registry)
        self._admin_dropped = {reason: admin_dropped.labels(reason) for reason in DROP_REASONS}
        self.readers = Gauge("otp_relay_body_readers", "Public connections whose request body is "
                             "being read", registry=self.registry)
        policy = Counter("otp_relay_policy_refusals", "Sends a policy rule refused (mode enforced) or "
                         "would have refused (mode monitored: sent anyway)", ["rule", "mode"],
                         registry=self.registry)
        self._policy = {(rule, mode): policy.labels(rule, mode) for rule in RULES
                        for mode in ("enforced", "monitored")}
        canary_sends = Counter("otp_relay_canary_sends", "Sends to the canary number by outcome",
                               ["outcome"], registry=self.registry)
        self._canary = {name: canary_sends.labels(name) for name in canary.OUTCOMES}
        hook = Gauge("otp_relay_voice_webhook", "The subaccount's VSS webhook (call outcomes): 1 for "
                     "the current state (ours, foreign, missing, error, off)", ["state"],
                     registry=self.registry)
        self._webhook = {state: hook.labels(state) for state in webhook.STATES}
        self.log_suppressed = Counter("otp_relay_log_lines_suppressed", "Request log lines left out "
                                      "by the log budget", registry=self.registry)

    def outcome(self, name: str, channel: object = None) -> None:
        """A send's outcome; ``channel`` ("text"/"voice") once the body said which."""
        self._outcomes[name].inc()
        if channel in CHANNELS:
            self._sends[channel, name].inc()

    def limited(self, limit: str) -> None:
        self._limits[limit].inc()

    def upstream_observer(self, channel: str):
        """The (status label, seconds) callback of the 8x8 client of ``channel``."""
        def observe(status: str, seconds: float) -> None:
            child = self._status_children.get((status, channel))
            if child is None:
                child = self._status_children[status, channel] = self._upstream_status.labels(status, channel)
            child.inc()
            self.upstream_latency.observe(seconds)
        return observe

    def dropped(self, reason: str) -> None:
        self._dropped[reason].inc()

    def policy(self, rule: str, monitored: bool) -> None:
        self._policy[rule, "monitored" if monitored else "enforced"].inc()

    def canary(self, outcome: str) -> None:
        self._canary[outcome].inc()

    def admin_dropped(self, reason: str) -> None:
        self._admin_dropped[reason].inc()

    def voice_webhook(self, state: str) -> None:
        for name, child in self._webhook.items():
            child.set(1 if name == state else 0)

    def key_reload(self, file: str, ok: bool) -> None:
        self._reloads.labels(file, "ok" if ok else "error").inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
