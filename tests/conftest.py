"""Shared pytest configuration: fixtures for the sandbox live in tests/fixtures/."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from otp_sandbox.controlplane.process import PORT_SHARD_ENV

# Hypothesis' default 200 ms deadline per example is a speed check, and speed is measured in
# bench/, not asserted in tests: on a loaded 2-core machine it failed examples that were correct.
settings.register_profile("otp-relay-operator", deadline=None)
settings.load_profile("otp-relay-operator")

pytest_plugins = [
    "tests.fixtures.eightbyeight",
    "tests.fixtures.relay",
    "tests.fixtures.redis",
    "tests.fixtures.crd",
    "tests.fixtures.cluster",
    "tests.fixtures.auth0",
    "tests.fixtures.image",
    "tests.fixtures.helm",
    "tests.fixtures.operator",
    "tests.fixtures.node",
]


def pytest_configure(config: pytest.Config) -> None:
    # Parallel workers (pytest-xdist, `make test`) each pick ports from their own slice; set in the
    # environment, so the processes a test starts (sandbox CLI, demo) keep to it too.
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count:
        os.environ[PORT_SHARD_ENV] = f"{int(worker.removeprefix('gw'))}/{count}"


# Fixtures whose use puts a test on the control plane (which also runs the image on its real
# node) or makes it build or run the image. Marking by use, not by hand, means a test cannot
# reach the cluster while `make test-fast` (-m "not cluster and not container") selects it.
_CLUSTER_FIXTURES = {"cluster"}
_CONTAINER_FIXTURES = {"built_image", "real_node", "cluster"}
_KUBELET_FIXTURES = {"real_node"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if used & _CONTAINER_FIXTURES:
            item.add_marker(pytest.mark.container)
        if used & _KUBELET_FIXTURES:
            item.add_marker(pytest.mark.kubelet)
        # One worker runs every test on a real kubelet, in collection order: the ones that start
        # their own node (tests/controlplane, demo, node lifecycle) come before the first that
        # starts the session's, so this host runs one kubelet at a time, and two never start
        # together (they could pick the same pod subnet).
        if item.get_closest_marker("kubelet"):
            item.add_marker(pytest.mark.xdist_group("kubelet"))
