"""``/oauth/token`` and the Management API's authentication and scope checks."""

from __future__ import annotations

import time

import httpx
import pytest
from auth0.management import AsyncManagementClient
from auth0.management.client import AsyncAuth0
from auth0.management.errors import ForbiddenError, UnauthorizedError

from otp_sandbox.auth0_emulator import Client

from .conftest import NO_RETRY, token_for


def _token_request(tenant, **overrides):
    client = tenant.clients[0]
    form = {"grant_type": "client_credentials", "client_id": client.client_id,
            "client_secret": client.client_secret, "audience": f"{tenant.base_url}/api/v2/"}
    form.update(overrides)
    return form


def test_client_credentials_issue_a_bearer_token_with_the_clients_scopes(auth0_tenant):
    tenant = auth0_tenant(clients=[Client("cid-1", "s3cret", scopes=("read:actions",
                                                                     "read:hooks"))])
    for response in (httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, data=_token_request(tenant)),
                     httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, json=_token_request(tenant))):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 86400
        assert body["scope"] == "read:actions read:hooks"
        assert body["access_token"].count(".") == 2


@pytest.mark.parametrize(("overrides", "status", "error"), [
    ({"client_secret": "wrong"}, 401, "access_denied"),
    ({"client_id": "nobody"}, 401, "invalid_client"),
    ({"audience": "https://elsewhere.example/api/v2/"}, 403, "access_denied"),
    ({"grant_type": "password"}, 403, "unauthorized_client"),
])
def test_bad_client_credentials_get_oauth_errors(tenant, overrides, status, error):
    response = httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, data=_token_request(tenant,
                                                                              **overrides))
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "error_description" in response.json()
    assert tenant.clients[0].client_secret not in response.text


def test_client_without_a_grant_for_the_api_is_refused(auth0_tenant):
    tenant = auth0_tenant(clients=[Client("nogrant", "pw", granted=False)])
    response = httpx.post(f"{tenant.base_url}/oauth/token", verify=tenant.ssl_context, data=_token_request(tenant))
    assert response.status_code == 403
    assert "client-grant" in response.json()["error_description"]


@pytest.mark.parametrize(("authorization", "message"), [
    (None, "Missing authentication"),
    ("Bearer not-a-jwt", "Invalid token"),
    ("Basic abc", "Bad HTTP authentication header format"),
])
def test_management_api_rejects_missing_or_bad_tokens(tenant, authorization, message):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{tenant.base_url}/api/v2/actions/actions", verify=tenant.ssl_context, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "error": "Unauthorized", "message": message}


def test_revoked_and_expired_tokens_are_refused(auth0_tenant):
    tenant = auth0_tenant(token_lifetime_seconds=1)
    issued = time.monotonic()
    token = token_for(tenant)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{tenant.base_url}/api/v2/hooks", verify=tenant.ssl_context,
                     headers=headers).status_code == 200
    # A one-second token lives at least one second and expires within about two.
    deadline = issued + 10
    while True:
        expired = httpx.get(f"{tenant.base_url}/api/v2/hooks", verify=tenant.ssl_context,
                            headers=headers)
        if expired.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert time.monotonic() - issued >= 1.0
    assert expired.status_code == 401
    assert expired.json()["message"] == "Expired token received for JSON Web Token validation"

    fresh = {"Authorization": f"Bearer {token_for(tenant)}"}
    tenant.revoke_tokens()
    revoked = httpx.get(f"{tenant.base_url}/api/v2/hooks", verify=tenant.ssl_context, headers=fresh)
    assert revoked.status_code == 401
    assert revoked.json()["message"] == "Invalid token"


def test_token_of_one_tenant_is_invalid_on_another(auth0_tenant):
    first, second = auth0_tenant(), auth0_tenant()
    headers = {"Authorization": f"Bearer {token_for(first)}"}
    response = httpx.get(f"{second.base_url}/api/v2/hooks", verify=second.ssl_context, headers=headers)
    assert response.status_code == 401


def test_missing_scope_is_a_403_naming_the_scope(auth0_tenant):
    tenant = auth0_tenant(clients=[Client("reader", "pw", scopes=("read:actions",))])
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    assert httpx.get(f"{tenant.base_url}/api/v2/actions/actions", verify=tenant.ssl_context,
                     headers=headers).status_code == 200
    response = httpx.post(f"{tenant.base_url}/api/v2/actions/actions", verify=tenant.ssl_context, headers=headers,
                          json={"name": "x", "supported_triggers": [{"id": "post-login"}]})
    assert response.status_code == 403
    assert response.json() == {
        "statusCode": 403, "error": "Forbidden",
        "message": "Insufficient scope, expected any of: create:actions",
        "errorCode": "insufficient_scope"}
    assert tenant.state()["actions"] == []


async def test_sdk_gets_a_token_and_sees_scope_errors(auth0_tenant):
    tenant = auth0_tenant(clients=[Client("sdk-reader", "pw", scopes=("read:hooks",))])
    sdk = AsyncManagementClient(domain=tenant.domain, client_id="sdk-reader", client_secret="pw",
                                httpx_client=httpx.AsyncClient(verify=tenant.ssl_context))
    pager = await sdk.hooks.list()
    assert [hook async for hook in pager] == []
    with pytest.raises(ForbiddenError) as caught:
        await sdk.hooks.create(name="h", script="x", trigger_id="send-phone-message",
                               request_options=NO_RETRY)
    assert caught.value.status_code == 403
    assert caught.value.body["errorCode"] == "insufficient_scope"
    assert "create:hooks" in caught.value.body["message"]
    logged = tenant.requests()
    assert [r.path for r in logged][:2] == ["/oauth/token", "/api/v2/hooks"]
    assert {r.client_id for r in logged} == {"sdk-reader"}


async def test_sdk_with_wrong_secret_fails_on_the_token_request(tenant):
    sdk = AsyncManagementClient(domain=tenant.domain, client_id=tenant.clients[0].client_id,
                                client_secret="not-the-secret",
                                httpx_client=httpx.AsyncClient(verify=tenant.ssl_context))
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await sdk.hooks.list()
    assert caught.value.response.status_code == 401
    assert caught.value.response.json()["error"] == "access_denied"


async def test_low_level_sdk_client_with_a_stale_token_gets_unauthorized(tenant):
    token = token_for(tenant)
    tenant.revoke_tokens()
    async with httpx.AsyncClient(verify=tenant.ssl_context) as http:
        client = AsyncAuth0(base_url=f"{tenant.base_url}/api/v2", token=lambda: token,
                            httpx_client=http)
        with pytest.raises(UnauthorizedError) as caught:
            await client.actions.get("0d9f1e8e-0000-4000-8000-000000000000",
                                     request_options=NO_RETRY)
    assert caught.value.body == {"statusCode": 401, "error": "Unauthorized",
                                 "message": "Invalid token"}
