"""Shared pytest configuration: fixtures for the sandbox live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.eightbyeight",
    "tests.fixtures.relay",
    "tests.fixtures.redis",
    "tests.fixtures.crd",
    "tests.fixtures.cluster",
    "tests.fixtures.auth0",
    "tests.fixtures.image",
]
