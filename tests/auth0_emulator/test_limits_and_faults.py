"""Token-bucket rate limiting with Auth0's headers and 429 body; injected faults and latency."""

from __future__ import annotations

import time

import httpx
import pytest
from auth0.management import AsyncManagementClient
from auth0.management.core.api_error import ApiError
from auth0.management.errors import TooManyRequestsError

from otp_sandbox.auth0_emulator import RateLimit

from .conftest import NO_RETRY, token_for

RATE_LIMITED_BODY = {"statusCode": 429, "error": "Too Many Requests",
                     "message": "Global limit has been reached",
                     "errorCode": "too_many_requests"}


def test_bucket_drains_with_headers_then_answers_429(auth0_tenant):
    tenant = auth0_tenant(rate_limit=RateLimit(capacity=3, refill_per_second=0.2))
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    with httpx.Client(base_url=tenant.base_url, headers=headers,
                      verify=tenant.ssl_context) as http:
        answers = [http.get("/api/v2/hooks") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-limit"] for a in answers] == ["3"] * 4
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[3].json() == RATE_LIMITED_BODY
    reset = int(answers[3].headers["x-ratelimit-reset"])
    # The next request is added 5 s later (at 0.2/s); the bucket is full only 15 s later.
    assert time.time() + 3 < reset <= time.time() + 6
    assert [r.status for r in tenant.requests() if r.path != "/oauth/token"] == [
        200, 200, 200, 429]


def test_token_endpoint_is_not_counted_against_the_management_bucket(auth0_tenant):
    tenant = auth0_tenant(rate_limit=RateLimit(capacity=1, refill_per_second=0.1))
    for _ in range(3):
        token_for(tenant)
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    assert httpx.get(f"{tenant.base_url}/api/v2/hooks", headers=headers,
                     verify=tenant.ssl_context).status_code == 200


async def test_sdk_sees_429_and_its_retry_honours_the_reset_header(auth0_tenant):
    tenant = auth0_tenant(rate_limit=RateLimit(capacity=1, refill_per_second=2))
    client = tenant.clients[0]
    # The SDK's own token request trusts SSL_CERT_FILE (it takes no client); the API calls use
    # the explicit one.
    sdk = AsyncManagementClient(domain=tenant.domain, client_id=client.client_id,
                                client_secret=client.client_secret,
                                httpx_client=httpx.AsyncClient(verify=tenant.ssl_context))
    await sdk.hooks.list()
    with pytest.raises(TooManyRequestsError) as caught:
        await sdk.hooks.list(request_options=NO_RETRY)
    assert caught.value.body == RATE_LIMITED_BODY
    assert caught.value.headers["x-ratelimit-remaining"] == "0"
    await sdk.hooks.list()  # the SDK's own retry waits for x-ratelimit-reset
    statuses = [r.status for r in tenant.requests() if r.path == "/api/v2/hooks"]
    assert statuses[:2] == [200, 429]
    assert statuses[-1] == 200 and 429 in statuses[2:]


def test_set_rate_limit_at_runtime(tenant):
    tenant.set_rate_limit(RateLimit(capacity=1, refill_per_second=0.1))
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    with httpx.Client(base_url=tenant.base_url, headers=headers,
                      verify=tenant.ssl_context) as http:
        assert [http.get("/api/v2/hooks").status_code for _ in range(2)] == [200, 429]


async def test_fail_next_injects_errors_with_auth0_bodies(tenant, sdk):
    tenant.fail_next(503, count=2)
    with pytest.raises(ApiError) as caught:
        await sdk.actions.list(request_options=NO_RETRY)
    assert caught.value.status_code == 503
    assert caught.value.body["statusCode"] == 503
    assert caught.value.body["error"] == "Service Unavailable"
    pager = await sdk.actions.list()  # second fault, then the SDK's retry gets through
    assert [a async for a in pager] == []
    statuses = [r.status for r in tenant.requests() if r.path == "/api/v2/actions/actions"]
    assert statuses[:3] == [503, 503, 200]


def test_latency_delays_every_answer(tenant):
    tenant.set_latency(300)
    started = time.monotonic()
    token_for(tenant)
    assert time.monotonic() - started >= 0.3
    tenant.set_latency(0)


def test_request_log_clears(tenant):
    token_for(tenant)
    assert tenant.requests()
    tenant.clear_requests()
    assert tenant.requests() == []
    assert tenant.writes() == []


def test_a_new_tenant_has_a_free_tenants_bucket(auth0_emulator):
    from tests.fixtures.auth0 import make_client  # noqa: PLC0415

    tenant = auth0_emulator.add_tenant(clients=[make_client()])  # no rate_limit: the default
    try:
        headers = {"Authorization": f"Bearer {token_for(tenant)}"}
        with httpx.Client(base_url=tenant.base_url, headers=headers, verify=tenant.ssl_context) as http:
            answers = [http.get("/api/v2/hooks") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["x-ratelimit-limit"] == "2"
        assert answers[2].json() == RATE_LIMITED_BODY
        # The next request is added within half a second (2/s); whole seconds, rounded up.
        assert int(answers[2].headers["x-ratelimit-reset"]) <= time.time() + 1.51
    finally:
        tenant.remove()
