"""Fixtures for the Auth0 sync tests: a tenant with an operator client and a "dashboard" client,
and a real otp-relay process in front of the 8x8 emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from otp_sandbox.auth0_emulator import Auth0Tenant

from tests.fixtures.auth0 import make_client
from tests.fixtures.relay import RelayProcess, free_port, kubelet_volume, relay_env
from tests.support.auth0 import (  # noqa: F401
    SIGNING_KEY,
    SMS_API_KEY,
    SUBACCOUNT,
    Dashboard,
    Setup,
    desired_for,
)


@pytest.fixture
def setup(auth0_tenant: Callable[..., Auth0Tenant]) -> Iterator[Setup]:
    operator, person = make_client(), make_client()
    tenant = auth0_tenant(clients=[operator, person])
    dashboard = Dashboard(tenant, person)
    yield Setup(tenant, operator, dashboard)
    dashboard.http.close()


@pytest.fixture
def relay_settings(sms_emulator, ssl_cert_file: Path, tmp_path: Path) -> dict[str, str]:
    """Environment of a relay delivering to the 8x8 emulator and accepting SIGNING_KEY."""
    sms_emulator.add_subaccount(SUBACCOUNT, SMS_API_KEY)
    sms_emulator.clear()
    return relay_env(tmp_path / "relay-keys", base_url=sms_emulator.base_url,
                     ssl_cert_file=ssl_cert_file, subaccount=SUBACCOUNT, api_key=SMS_API_KEY,
                     signing_keys=(SIGNING_KEY,))


@pytest.fixture
def relay(relay_settings: dict[str, str], relay_factory, tmp_path: Path) -> RelayProcess:
    return relay_factory(relay_settings, workdir=tmp_path / "relay")


RECEIPT_TOKEN = "rcpt-auth0-tests-Q2d8xV1mZ0aT7kLp"


@pytest.fixture
def receipt_relay(relay_settings: dict[str, str], relay_factory, tmp_path: Path) -> Callable[..., RelayProcess]:
    """``receipt_relay(**env)``: a relay whose sends ask 8x8 for receipts on its own loopback
    receipt path (token RECEIPT_TOKEN), with ``env`` added to its settings."""
    def start(**env: str) -> RelayProcess:
        port = free_port()
        kubelet_volume(tmp_path / "receipts", {"tokens": RECEIPT_TOKEN + "\n"})
        return relay_factory({**relay_settings, **env,
                              "OTP_RELAY_RECEIPT_URL": f"http://127.0.0.1:{port}/v1/receipts",
                              "OTP_RELAY_RECEIPT_TOKEN_FILE": str(tmp_path / "receipts" / "tokens")},
                             workdir=tmp_path / "relay", port=port)
    return start


