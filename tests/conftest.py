"""Shared pytest configuration: fixtures for the sandbox live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.crd",
]
