"""Fixtures for the Helm chart tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import Helm, helm_ready, locate_helm

# A cold helm build (first run without `make controlplane`) takes minutes inside the first chart
# test's setup; give the chart tests room for it then, and only then.
HELM_BUILD_TIMEOUT = 1200


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if helm_ready():
        return
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(HELM_BUILD_TIMEOUT))


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm, isolated from the user's helm configuration (no cluster access)."""
    return Helm(binary=locate_helm(), home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, kubeconfig: str | Path) -> Helm:
    """helm pointed at the test cluster (admin kubeconfig)."""
    return helm.with_kubeconfig(str(kubeconfig))
