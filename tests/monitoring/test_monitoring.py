"""The chart's alerts and dashboard: valid, unit-tested with promtool, and built only on metric
names the relay and the operator really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from otp_operator import metrics as operator_metrics  # noqa: F401  registers the operator's metrics
from otp_relay import conversion, metrics as relay_metrics, pumping, receipts
from tests.fixtures.relay import RelayProcess, relay_env

HERE = Path(__file__).parent
FILES = HERE.parent.parent / "charts" / "otp-relay-operator" / "files"
RULES = FILES / "prometheus-rules.yaml"
DASHBOARD = FILES / "grafana-dashboard.json"
_NAME = re.compile(r"\b(otp_[a-z0-9_]+)")
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: `make test` installs it (Debian package prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=HERE)


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules_test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def used_metric_names() -> dict[str, set[str]]:
    """{metric name: where it is used} over every rule expression and dashboard query."""
    used: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in _NAME.findall(rule["expr"]):
                used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in _NAME.findall(target["expr"]):
                used.setdefault(name, set()).add(f"panel {panel['title']!r}")
    return used


def exported_names(exposition: str) -> set[str]:
    """Every sample name a /metrics text can carry (from its TYPE lines, so label sets that
    have not been used yet count too)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":
                name = name.removesuffix("_total")
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(tmp_path: Path, ssl_cert_file: Path) -> None:
    env = relay_env(tmp_path, base_url="https://127.0.0.1:9", ssl_cert_file=ssl_cert_file,
                    RECEIPT_URL="https://otp.example/v1/receipts", RECEIPT_TOKEN_FILE=str(tmp_path / "tokens"))
    (tmp_path / "tokens").write_text("token-for-the-test\n")
    relay = RelayProcess.start(tmp_path, env)
    try:
        exported = exported_names(relay.get("/metrics").text)
    finally:
        relay.stop()
    exported |= exported_names(generate_latest(REGISTRY).decode())
    used = used_metric_names()
    assert len(used) >= 10, sorted(used)
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"used but exported by neither the relay nor the operator: {missing}"


# The bounded label sets the code owns, per (metric, label) an alert, panel or rule test selects
# on: a value outside them can never match a real series, whatever the rule tests' own series say.
OWNED_LABEL_VALUES = {
    ("otp_relay_requests_total", "outcome"): set(relay_metrics.OUTCOMES),
    ("otp_relay_receipts_total", "state"): set(receipts.STATES),
    ("otp_relay_receipts_total", "detail"): set(receipts.DETAILS) | set(receipts.VOICE_DETAILS),
    # the relay's delivery channel (text, voice); on the operator's metrics `channel` is the
    # OtpChannel's name, not a value set
    ("otp_relay_receipts_total", "channel"): set(relay_metrics.CHANNELS),
    ("otp_relay_conversion_outcomes_total", "outcome"): {"success", "failure"},
    ("otp_relay_log_events_total", "result"): {"matched", "unknown", "replayed", "ignored", "malformed",
                                               "unauthorized"},
    ("otp_relay_conversion_blocks_total", "mode"): {"monitor", "enforce"},
    ("otp_relay_conversion_blocks_total", "kind"): {"prefix", "country"},
    ("otp_relay_conversion_blocks_active", "kind"): {"prefix", "country"},
}
# Labels Prometheus adds from the scrape target, and the operator's object names: not value sets.
TARGET_LABELS = {"namespace", "job", "country", "error_code"}
OPERATOR_OBJECT_LABELS = {"channel"}
_SELECTOR = re.compile(r"\b(otp_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def selected_label_values(text: str) -> list[tuple[str, str, str]]:
    """(metric, label, value) of every matcher in PromQL or series notation; regex alternatives
    (``a|b``) are split into their values."""
    found = []
    for metric, matchers in _SELECTOR.findall(text.replace('\\"', '"')):
        for label, _, value in _MATCHER.findall(matchers):
            found.extend((metric, label, one) for one in value.split("|"))
    return found


def test_alerts_panels_and_rule_tests_select_only_label_values_the_code_emits() -> None:
    sources = {"rules": RULES.read_text(), "dashboard": DASHBOARD.read_text(),
               "rule tests": (HERE / "rules_test.yaml").read_text()}
    checked = 0
    for where, text in sources.items():
        for metric, label, value in selected_label_values(text):
            if label in TARGET_LABELS or (label in OPERATOR_OBJECT_LABELS and metric.startswith("otp_operator_")):
                continue
            owned = OWNED_LABEL_VALUES.get((metric, label))
            assert owned is not None, f"{where}: {metric}{{{label}}} has no known value set (add it above)"
            assert value in owned, f"{where}: {metric}{{{label}={value!r}}} is never emitted; emitted: {sorted(owned)}"
            checked += 1
    assert checked >= 20, checked


def test_the_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "otp-relay-operator"
    assert all(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])


def test_the_conversion_value_sets_are_the_relays() -> None:
    assert OWNED_LABEL_VALUES["otp_relay_conversion_outcomes_total", "outcome"] == set(conversion.OUTCOMES)
    assert OWNED_LABEL_VALUES["otp_relay_log_events_total", "result"] == set(conversion.LOG_RESULTS)
    assert OWNED_LABEL_VALUES["otp_relay_conversion_blocks_active", "kind"] == set(pumping.KINDS)


def test_the_dashboard_shows_conversion_by_country_and_the_active_blocks() -> None:
    panels = {panel["title"]: panel for panel in json.loads(DASHBOARD.read_text())["panels"]}
    by_country = next(p for title, p in panels.items() if title.startswith("Conversion by country"))
    assert "by (namespace, job, country)" in by_country["targets"][0]["expr"]
    assert "otp_relay_conversion_outcomes_total" in by_country["targets"][0]["expr"]
    blocks = next(p for title, p in panels.items() if title.startswith("Active conversion blocks"))
    assert "otp_relay_conversion_blocks_active" in blocks["targets"][0]["expr"]


@pytest.mark.parametrize("name", ["otp_relay_receipts_total", "otp_relay_delivery_seconds_bucket",
                                  "otp_operator_channel_ready", "otp_operator_signing_key_rotation_seconds"])
def test_the_names_the_readme_documents_are_used(name: str) -> None:
    assert name in used_metric_names()
