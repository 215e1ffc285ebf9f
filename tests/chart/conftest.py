"""Fixtures for the Helm chart tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm import Helm, locate_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """helm, isolated from the user's helm configuration (no cluster access)."""
    return Helm(binary=locate_helm(), home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def cluster_helm(helm: Helm, kubeconfig: str | Path) -> Helm:
    """helm pointed at the test cluster (admin kubeconfig)."""
    return helm.with_kubeconfig(str(kubeconfig))
