"""Helpers for the emulator's own contract tests: a tenant, a token, a raw client, the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from auth0.management import AsyncManagementClient

from otp_sandbox.auth0_emulator import Auth0Tenant

from tests.support.auth0 import management_token

NO_RETRY = {"max_retries": 0}


def token_for(tenant: Auth0Tenant, client_index: int = 0) -> str:
    return management_token(tenant, tenant.clients[client_index])


@pytest.fixture
def tenant(auth0_tenant: Callable[..., Auth0Tenant]) -> Auth0Tenant:
    return auth0_tenant(build_seconds=0.3)


@pytest.fixture
async def api(tenant: Auth0Tenant) -> AsyncIterator[httpx.AsyncClient]:
    """A plain httpx client on ``/api/v2`` with a valid bearer token."""
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    async with httpx.AsyncClient(base_url=f"{tenant.base_url}/api/v2",
                                 headers=headers, timeout=30,
                                 verify=tenant.ssl_context) as client:
        yield client


@pytest.fixture
def sdk(tenant: Auth0Tenant) -> AsyncManagementClient:
    """The SDK with a token from ``token_for`` and an HTTP client that trusts the sandbox CA."""
    return AsyncManagementClient(domain=tenant.domain, token=token_for(tenant),
                                 httpx_client=httpx.AsyncClient(verify=tenant.ssl_context))


async def wait_built(api: httpx.AsyncClient, action_id: str, limit_seconds: float = 10) -> None:
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if (await api.get(f"/actions/actions/{action_id}")).json()["status"] == "built":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"action {action_id} never built")


async def wait_deployed(api: httpx.AsyncClient, action_id: str, version_id: str,
                        limit_seconds: float = 10) -> dict:
    """Deploys finish asynchronously: poll until ``version_id`` is the deployed version."""
    import asyncio  # noqa: PLC0415
    import time  # noqa: PLC0415

    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        action = (await api.get(f"/actions/actions/{action_id}")).json()
        if (action.get("deployed_version") or {}).get("id") == version_id:
            return action
        await asyncio.sleep(0.05)
    raise AssertionError(f"version {version_id} of {action_id} never deployed")


async def deployed_action(api: httpx.AsyncClient, name: str, trigger: str, code: str,
                          secrets: dict[str, str] | None = None) -> dict:
    """Create, wait for the build, deploy, wait for the deploy; returns the action after."""
    version = {"custom-phone-provider": "v1", "send-phone-message": "v2"}.get(trigger, "v1")
    created = await api.post("/actions/actions", json={
        "name": name, "supported_triggers": [{"id": trigger, "version": version}],
        "code": code, "runtime": "node22",
        "secrets": [{"name": k, "value": v} for k, v in (secrets or {}).items()]})
    assert created.status_code == 201, created.text
    action_id = created.json()["id"]
    await wait_built(api, action_id)
    deployed = await api.post(f"/actions/actions/{action_id}/deploy")
    assert deployed.status_code == 200, deployed.text
    return await wait_deployed(api, action_id, deployed.json()["id"])
