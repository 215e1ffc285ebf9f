"""Helpers of the Auth0 sync tests: the test keys, a person at the Auth0 Dashboard (``Dashboard``)
on the same tenant as the operator, a tenant set up for a sync (``Setup``), the desired
integration of a mode (``desired_for``). The fixtures are in tests/auth0/conftest.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
from otp_operator.auth0 import Auth0Credentials, Auth0Sync, DesiredIntegration
from otp_sandbox.auth0_emulator import Auth0Tenant, Client

SUBACCOUNT = "shop_otp"
SMS_API_KEY = "sms-api-key-for-tests"
SIGNING_KEY = "signing-key-0001-abcdef"
PACED_ATTEMPTS = 200  # a free tenant's 2/s: 200 waits cover far more than any test makes at once


def rate_limit_pause(response: httpx.Response) -> float:
    """How long to wait after a 429: until ``x-ratelimit-reset`` (when the next request is
    added to the tenant's bucket), at least 50 ms."""
    return max(0.05, float(response.headers.get("x-ratelimit-reset", 0)) - time.time())


def management_token(tenant: Auth0Tenant, client: Client) -> str:
    """A Management API access token for ``client`` (the client-credentials grant, as the SDK
    and the operator get one): the one place the tests ask the tenant for a token."""
    response = httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, json={
        "grant_type": "client_credentials", "client_id": client.client_id,
        "client_secret": client.client_secret, "audience": f"{tenant.base_url}/api/v2/"})
    return response.raise_for_status().json()["access_token"]


class Dashboard:
    """Changes a tenant the way a person in the Auth0 dashboard would: Management API calls."""

    def __init__(self, tenant: Auth0Tenant, client: Client) -> None:
        token = management_token(tenant, client)
        self.http = httpx.Client(base_url=f"{tenant.base_url}/api/v2",
                                 headers={"Authorization": f"Bearer {token}"},
                                 verify=tenant.ssl_context)

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        for _ in range(PACED_ATTEMPTS):  # the bucket is shared with the operator: wait out a 429, as the Dashboard does
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 429:
                break
            time.sleep(rate_limit_pause(response))
        response.raise_for_status()
        return response.json() if response.content else None

    def wait_built_and_deploy(self, action_id: str) -> None:
        """Deploy as a person would: wait for the build, deploy, wait until it serves."""
        for _ in range(100):  # polls gently: the tenant's rate limit is shared with the operator
            time.sleep(0.2)
            if self("GET", f"/actions/actions/{action_id}")["status"] == "built":
                break
        version = self("POST", f"/actions/actions/{action_id}/deploy")["id"]
        for _ in range(100):
            time.sleep(0.2)
            action = self("GET", f"/actions/actions/{action_id}")
            if (action.get("deployed_version") or {}).get("id") == version:
                return
        raise AssertionError(f"version {version} never deployed")


async def paced_request(api: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One Management API request through an async client, waiting out the tenant's 429s
    (tests that make hundreds of requests)."""
    for _ in range(PACED_ATTEMPTS):
        response = await api.request(method, url, **kwargs)
        if response.status_code != 429:
            return response
        await asyncio.sleep(rate_limit_pause(response))
    raise AssertionError(f"{method} {url} still rate-limited after {PACED_ATTEMPTS} tries")


def bind_foreign_provider_action(dashboard: Dashboard) -> str:
    """What saving "Custom" in the Dashboard leaves: an action bound to custom-phone-provider."""
    action = dashboard("POST", "/actions/actions", json={
        "name": "Custom Phone Provider", "runtime": "node22",
        "code": "exports.onExecuteCustomPhoneProvider = async () => {};",
        "supported_triggers": [{"id": "custom-phone-provider", "version": "v1"}]})
    dashboard.wait_built_and_deploy(action["id"])
    dashboard("PATCH", "/actions/triggers/custom-phone-provider/bindings", json={
        "bindings": [{"ref": {"type": "action_id", "value": action["id"]}}]})
    return action["id"]


@dataclass
class Setup:
    tenant: Auth0Tenant
    operator: Client
    dashboard: Dashboard

    @property
    def credentials(self) -> Auth0Credentials:
        return Auth0Credentials(self.tenant.domain, self.operator.client_id,
                                self.operator.client_secret)

    def sync(self) -> Auth0Sync:
        return Auth0Sync(self.credentials)


def desired_for(integration: str, relay_url: str, **overrides: Any) -> DesiredIntegration:
    fields: dict[str, Any] = dict(owner="shop/prod", integration=integration,
                                  name="otp-relay-shop-prod", relay_url=relay_url,
                                  signing_key=SIGNING_KEY)
    fields.update(overrides)
    return DesiredIntegration(**fields)
