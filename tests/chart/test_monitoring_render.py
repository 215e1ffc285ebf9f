"""The chart's monitoring objects: off by default; when on, the PrometheusRule carries the
promtool-tested rule file as is and the dashboard ConfigMap has Grafana's sidecar label."""

from __future__ import annotations

import json

import yaml

from tests.chart.helm import CHART_DIR, Helm, by_kind, set_values

ALL_ON = {"monitoring.prometheusRule.enabled": True, "monitoring.grafanaDashboard.enabled": True,
          "monitoring.relayServiceMonitor.enabled": True}


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    objects = helm.template()
    assert not by_kind(objects, "PrometheusRule")
    assert not [o for o in by_kind(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]


def test_rule_dashboard_and_relay_scraping_when_enabled(helm: Helm) -> None:
    objects = helm.template(*set_values(ALL_ON))
    [rule] = by_kind(objects, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART_DIR / "files" / "prometheus-rules.yaml").read_text())
    [dashboard] = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["otp-relay-operator.json"]) == json.loads(
        (CHART_DIR / "files" / "grafana-dashboard.json").read_text())
    relays = [o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-relays")]
    assert relays[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "otp-relay"
    assert relays[0]["spec"]["endpoints"][0]["port"] == "metrics"
