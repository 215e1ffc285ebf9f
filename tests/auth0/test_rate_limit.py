"""The tenant's Management API rate limit from the client side: one limiter per tenant, fed by
Auth0's x-ratelimit-* headers. Pure tests with a fake clock, then syncs against a free tenant
(burst 2, 2 requests/s)."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from otp_operator.auth0 import CONFLICT, RATE_LIMITED, Auth0Credentials, Auth0Error
from otp_operator.auth0.ratelimit import TenantRateLimit
from otp_operator.auth0_pool import Auth0Pool
from otp_sandbox.auth0_emulator import FREE
from tests.support.auth0 import desired_for, management_token
from tests.fixtures.auth0 import make_client, route_phone_messages

RELAY_URL = "https://otp.shop.example/prod"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def limiter(clock: Clock, **kwargs) -> TenantRateLimit:
    return TenantRateLimit("tenant.example", clock=clock, sleep=clock.sleep, **kwargs)


async def test_a_burst_then_the_refill_rate():
    clock = Clock()
    limit = limiter(clock)  # a free tenant's bucket until Auth0 says otherwise
    for _ in range(5):
        await limit.acquire(max_wait=3)
    assert clock.slept == [0.5, 0.5, 0.5]


async def test_what_auth0_says_remains_lowers_the_estimate_and_the_limit_sets_the_bucket():
    clock = Clock()
    limit = limiter(clock)
    limit.observe(200, {"x-ratelimit-limit": "50", "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(int(clock.now) + 1)})
    assert (limit.capacity, limit.rate) == (50, 50.0)
    await limit.acquire(max_wait=3)  # someone else used the bucket: wait for one token
    assert clock.slept == [0.02]


async def test_a_429_holds_every_caller_until_its_reset_and_a_long_hold_is_not_slept():
    clock = Clock()
    limit = limiter(clock)
    limit.observe(429, {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(int(clock.now) + 2)})
    await asyncio.gather(limit.acquire(max_wait=3), limit.acquire(max_wait=3))
    assert clock.slept == [2.0, 0.5]  # the second caller waited for the reset too
    limit.observe(429, {"x-ratelimit-reset": str(int(clock.now) + 30)})
    with pytest.raises(Auth0Error) as caught:
        await limit.acquire(max_wait=3)
    assert caught.value.reason == RATE_LIMITED and caught.value.retry_after == pytest.approx(29.5)  # reset is whole seconds


def _pool_call(pool: Auth0Pool, creds: Auth0Credentials, owner: int, recorded=None):
    name = f"otp-relay-c{owner}"
    return pool.ensure(creds, desired_for("phone-provider", RELAY_URL, owner=f"shop/c{owner}", name=name),
                       recorded)


async def test_ten_channels_on_a_free_tenant_converge_without_a_429(auth0_tenant):
    """One channel registers; then it and nine more (refused: the tenant's phone provider is
    taken) reconcile at once, through one limiter for the tenant."""
    client = make_client()
    tenant = auth0_tenant(clients=[client], rate_limit=FREE)
    route_phone_messages(tenant, "phone-provider")
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    pool = Auth0Pool(concurrency_per_tenant=4)
    try:
        first = await _pool_call(pool, creds, 0)
        assert first.created and first.routing.ok
        results = await asyncio.gather(_pool_call(pool, creds, 0, first.as_status()),
                                       *(_pool_call(pool, creds, i) for i in range(1, 10)),
                                       return_exceptions=True)
    finally:
        await pool.close()
    assert results[0].writes == 0, results[0]
    assert [getattr(r, "reason", None) for r in results[1:]] == [CONFLICT] * 9, results
    statuses = [r.status for r in tenant.requests() if r.path != "/oauth/token"]
    assert len(statuses) > 40 and statuses.count(429) == 0


async def test_a_429_storm_from_another_client_is_absorbed(auth0_tenant):
    """Another client drains the tenant's bucket for 2 s while a sync runs: the sync waits out
    each reset (shared by its concurrent reads) and succeeds."""
    client, other = make_client(), make_client()
    tenant = auth0_tenant(clients=[client, other], rate_limit=FREE)
    route_phone_messages(tenant, "send-phone-message")
    token = management_token(tenant, other)
    storm: list[int] = []

    def hammer() -> None:
        deadline = time.monotonic() + 2.0
        with httpx.Client(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            while time.monotonic() < deadline and len(storm) < 2000:
                storm.append(http.get("/hooks").status_code)

    thread = threading.Thread(target=hammer)
    thread.start()
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    pool = Auth0Pool(concurrency_per_tenant=4)
    try:
        await asyncio.sleep(0.2)  # the storm is on
        result = await pool.ensure(creds, desired_for("send-phone-message", RELAY_URL), None)
    finally:
        thread.join()
        await pool.close()
    assert result.created and result.routing.ok
    assert storm.count(429) > 10  # it was a storm
    ours = [r.status for r in tenant.requests() if r.path not in ("/api/v2/hooks", "/oauth/token")]
    assert 429 in ours  # and the sync met it


async def test_two_channels_registering_on_one_tenant_at_once_do_not_both_take_its_provider(auth0_tenant):
    """A tenant has one phone provider: of two channels created at the same instant, one
    registers and the other is refused as a conflict (not both bound in turn)."""
    client = make_client()
    tenant = auth0_tenant(clients=[client])
    route_phone_messages(tenant, "phone-provider")
    creds = Auth0Credentials(tenant.domain, client.client_id, client.client_secret)
    pool = Auth0Pool(concurrency_per_tenant=4)
    try:
        results = await asyncio.gather(_pool_call(pool, creds, 1), _pool_call(pool, creds, 2),
                                       return_exceptions=True)
    finally:
        await pool.close()
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1 and won[0].created, results
    assert [getattr(r, "reason", None) for r in results if r not in won] == [CONFLICT], results
    state = tenant.state()
    assert [a["name"] for a in state["actions"]] == [f"otp-relay-c{results.index(won[0]) + 1}"]
    assert len(state["phone_providers"]) == 1
