"""Shared pytest configuration: fixtures for the sandbox live in tests/fixtures/."""

from __future__ import annotations

import pytest
from hypothesis import settings

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


# Fixtures whose use puts a test on the control plane (which also runs the image on its real
# node) or makes it build or run the image. Marking by use, not by hand, means a test cannot
# reach the cluster while `make test-fast` (-m "not cluster and not container") selects it.
_CLUSTER_FIXTURES = {"cluster"}
_CONTAINER_FIXTURES = {"built_image", "real_node", "cluster"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & _CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if used & _CONTAINER_FIXTURES:
            item.add_marker(pytest.mark.container)
