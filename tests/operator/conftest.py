"""Fixtures of the operator's integration tests (the shared sandbox fixtures come from tests/fixtures)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from otp_sandbox.auth0_emulator import Auth0Tenant
from otp_sandbox.eightbyeight import EightByEightEmulator
from otp_sandbox.pki import CertificateAuthority
from tests.fixtures.relay import free_port

from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS, OperatorProcess, RelayFromDeployment
from tests.fixtures.cluster import temporary_namespace

from .support import channel_manifest, delete_all_channels, make_secret

# A relay image nobody pulls (kwok runs no containers), a short grace before an old signing key
# is retired and no wait for Secret propagation, so rotation tests finish quickly (the rotation
# test with a realistic relay stand-in sets its own propagation).
TEST_OPERATOR_ARGS = ("--all-namespaces", "--relay-image", "example.test/otp-relay:dev",
                      "--rotation-grace", "2", "--key-propagation", "0", *SANDBOX_ENDPOINT_ARGS)


@dataclass
class ChannelSetup:
    """Everything one channel needs: its Secrets, tenant, 8x8 subaccount and public URL."""

    namespace: str
    name: str
    tenant: Auth0Tenant
    subaccount: str
    api_key: str
    public_url: str
    secret_values: list[str] = field(default_factory=list)

    def manifest(self, sms_base_url: str, **extra: Any) -> dict[str, Any]:
        manifest = channel_manifest(self.namespace, self.name, domain=self.tenant.domain,
                                    public_url=self.public_url, sms_base_url=sms_base_url, **extra)
        manifest["spec"]["sms"]["subaccountId"] = self.subaccount
        return manifest


@pytest.fixture
def run_operator(kubeconfig: Path, ssl_cert_file: Path, otpchannel_crd: dict, auth0_emulator: Any,
                 auth0_tenant: Callable[..., Auth0Tenant], k8s_api: client.ApiClient,
                 tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """``run_operator(*extra_args)`` starts ``otp-operator run``. At teardown the test's channels
    are deleted while an operator still runs (so no namespace is left stuck on finalizers),
    then the operators are stopped. It depends on ``auth0_tenant`` so the test's tenants are
    removed only after that: each channel's cleanup then meets its tenant, as in production
    (with the tenant gone first, every cleanup backed off until it was abandoned, ~50 s a test)."""
    started: list[OperatorProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> OperatorProcess:
        process = OperatorProcess(kubeconfig, ssl_cert_file, tmp_path / f"operator-{len(started)}.log",
                                  (*TEST_OPERATOR_ARGS, *args))
        process.env.update(env or {})
        started.append(process.start())
        return process

    yield start
    try:
        if not any(p.running() for p in started):
            start()  # the test stopped every operator: one more cleans up
        delete_all_channels(k8s_api)
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def setup_channel(k8s_api: client.ApiClient, auth0_tenant: Callable[..., Auth0Tenant],
                  sms_emulator: EightByEightEmulator) -> Callable[..., ChannelSetup]:
    def create(namespace: str, name: str = "prod", tenant: Auth0Tenant | None = None,
               integration: str = "phone-provider", api: client.ApiClient | None = None) -> ChannelSetup:
        """``api``: another cluster's client (default: the session cluster's)."""
        api = api or k8s_api
        if tenant is None:
            tenant = auth0_tenant()
            tenant.route_phone_messages_to(integration)  # a tenant set up the real way
        credentials = tenant.clients[0]
        make_secret(api, namespace, "auth0-mgmt",
                    {"client_id": credentials.client_id, "client_secret": credentials.client_secret})
        subaccount = f"sub_{uuid.uuid4().hex[:8]}"
        api_key = secrets.token_urlsafe(24)
        sms_emulator.add_subaccount(subaccount, api_key)
        make_secret(api, namespace, "eightbyeight", {"apikey": api_key})
        return ChannelSetup(namespace, name, tenant, subaccount, api_key,
                            f"https://127.0.0.1:{free_port()}/prod",
                            [credentials.client_secret, api_key])

    return create


@pytest.fixture
def relay_from_deployment(k8s_api: client.ApiClient, sandbox_ca: CertificateAuthority, ssl_cert_file: Path,
                          tmp_path: Path) -> Iterator[Callable[..., RelayFromDeployment]]:
    started: list[RelayFromDeployment] = []

    def start(namespace: str, deployment: str, public_url: str, sync_interval: float = 0.1) -> RelayFromDeployment:
        relay = RelayFromDeployment(k8s_api, namespace, deployment, tmp_path / f"relay-{len(started)}",
                                    sandbox_ca, ssl_cert_file, sync_interval=sync_interval)
        started.append(relay)
        relay.start(public_url)
        return relay

    yield start
    for relay in started:
        relay.stop()


@pytest.fixture
def second_namespace(k8s_api: client.ApiClient) -> Iterator[str]:
    with temporary_namespace(k8s_api) as name:
        yield name
