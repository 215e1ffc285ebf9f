"""The Helm chart tests' collection rule (their fixtures are in tests/fixtures/helm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import helm_ready

# A cold helm build (first run without `make controlplane`) takes minutes inside the first chart
# test's setup; give the chart tests room for it then, and only then.
HELM_BUILD_TIMEOUT = 1200


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if helm_ready():
        return
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(HELM_BUILD_TIMEOUT))
