"""spec.conversion's Auth0 log stream: Auth0Sync.ensure_log_stream / remove_log_stream against
the Auth0 emulator (what a real tenant answers, its plan limit and scopes)."""

from __future__ import annotations

from otp_operator.auth0 import Auth0Credentials, Auth0Sync, sync as auth0_sync
from otp_operator.auth0.model import LOG_STREAM_SCOPES, DesiredLogStream
from otp_sandbox.auth0_emulator.config import ALL_SCOPES
from tests.fixtures.auth0 import make_client
from tests.support.auth0 import Setup

NAME = "otp-relay-shop-prod"
ENDPOINT = "https://otp.shop.example/prod/v1/auth0-logs"
T1, T2 = "log-token-one-9f8e7d6c5b4a39281706", "log-token-two-0a1b2c3d4e5f60718293"


def desired(*tokens: str, endpoint: str = ENDPOINT) -> DesiredLogStream:
    return DesiredLogStream(NAME, endpoint, tokens or (T1,))


def streams(setup: Setup) -> list[dict]:
    return setup.dashboard("GET", "/log-streams")


def log_stream_writes(setup: Setup) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in setup.tenant.writes() if r.path.startswith("/api/v2/log-streams")]


async def test_created_once_then_a_second_pass_writes_nothing(setup: Setup) -> None:
    async with setup.sync() as sync:
        first = await sync.ensure_log_stream(desired(), relay_ready=True)
        assert (first.ok, first.reason, first.created) == (True, auth0_sync.LOG_STREAM_ACTIVE, True)
        [stream] = streams(setup)
        assert stream["name"] == NAME and stream["type"] == "http" and stream["status"] == "active"
        assert stream["sink"] == {"httpEndpoint": ENDPOINT, "httpAuthorization": f"Bearer {T1}",
                                  "httpContentFormat": "JSONARRAY", "httpContentType": "application/json"}
        assert sorted(f["name"] for f in stream["filters"]) == ["auth.login.fail", "auth.login.success", "other"]
        setup.tenant.clear_requests()
        again = await sync.ensure_log_stream(desired(), relay_ready=True)
    assert again.ok and not again.created and again.writes == 0
    assert setup.tenant.writes() == []
    assert T1 not in again.message


async def test_nothing_is_created_before_the_relay_is_ready(setup: Setup) -> None:
    async with setup.sync() as sync:
        result = await sync.ensure_log_stream(desired(), relay_ready=False)
    assert (result.ok, result.reason) == (False, auth0_sync.LOG_STREAM_WAITING)
    assert streams(setup) == [] and log_stream_writes(setup) == []


async def test_a_rotated_token_moves_the_stream_with_one_patch(setup: Setup) -> None:
    async with setup.sync() as sync:
        await sync.ensure_log_stream(desired(T1), relay_ready=True)
        setup.tenant.clear_requests()
        waiting = await sync.ensure_log_stream(desired(T1, T2), relay_ready=False)  # relay still rolling out
        assert waiting.writes == 0 and streams(setup)[0]["sink"]["httpAuthorization"] == f"Bearer {T1}"
        rotated = await sync.ensure_log_stream(desired(T1, T2), relay_ready=True)
        assert rotated.updated == ("bearer token",) and rotated.writes == 1
        assert all(T1 not in note and T2 not in note for note in (*rotated.updated, rotated.message))
        assert log_stream_writes(setup) == [("PATCH", f"/api/v2/log-streams/{rotated.stream_id}")]
        assert streams(setup)[0]["sink"]["httpAuthorization"] == f"Bearer {T2}"
        setup.tenant.clear_requests()
        assert (await sync.ensure_log_stream(desired(T1, T2), relay_ready=True)).writes == 0


async def test_a_stream_of_ours_edited_by_hand_is_corrected(setup: Setup) -> None:
    async with setup.sync() as sync:
        created = await sync.ensure_log_stream(desired(), relay_ready=True)
        setup.dashboard("PATCH", f"/log-streams/{created.stream_id}", json={
            "filters": [{"type": "category", "name": "other"}], "status": "paused"})
        fixed = await sync.ensure_log_stream(desired(), relay_ready=True)
    assert fixed.ok and fixed.resumed and fixed.updated == ("filters",)
    [stream] = streams(setup)
    assert stream["status"] == "active" and len(stream["filters"]) == 3


async def test_a_paused_stream_is_reported_and_resumed_only_with_a_ready_relay(setup: Setup) -> None:
    async with setup.sync() as sync:
        created = await sync.ensure_log_stream(desired(), relay_ready=True)
        setup.dashboard("PATCH", f"/log-streams/{created.stream_id}", json={"status": "paused"})
        setup.tenant.clear_requests()
        reported = await sync.ensure_log_stream(desired(), relay_ready=False)
        assert (reported.ok, reported.reason) == (False, auth0_sync.LOG_STREAM_SUSPENDED)
        assert "paused" in reported.message and log_stream_writes(setup) == []
        resumed = await sync.ensure_log_stream(desired(), relay_ready=True)
    assert resumed.ok and resumed.resumed and streams(setup)[0]["status"] == "active"


async def test_someone_elses_stream_with_our_name_is_never_touched(setup: Setup) -> None:
    foreign = setup.dashboard("POST", "/log-streams", json={
        "name": NAME, "type": "http", "sink": {"httpEndpoint": "https://siem.example/ingest",
                                                "httpAuthorization": "Bearer theirs"}})
    setup.tenant.clear_requests()
    async with setup.sync() as sync:
        result = await sync.ensure_log_stream(desired(), relay_ready=True)
        assert (result.ok, result.reason) == (False, auth0_sync.LOG_STREAM_CONFLICT)
        assert "https://siem.example/ingest" in result.message and "theirs" not in result.message
        assert await sync.remove_log_stream(desired()) == []
    assert log_stream_writes(setup) == []
    assert streams(setup) == [foreign]


async def test_the_plan_limit_gives_log_streams_not_allowed(setup: Setup) -> None:
    setup.tenant.set_log_stream_limit(0)
    async with setup.sync() as sync:
        result = await sync.ensure_log_stream(desired(), relay_ready=True)
    assert (result.ok, result.reason) == (False, auth0_sync.LOG_STREAMS_NOT_ALLOWED)
    assert "plan" in result.message and "spec.conversion" in result.message
    assert streams(setup) == []


async def test_missing_log_stream_scopes_are_named_before_any_request(auth0_tenant) -> None:
    client = make_client(scopes=tuple(s for s in ALL_SCOPES if s not in ("create:log_streams", "update:log_streams")))
    tenant = auth0_tenant(clients=[client])
    async with Auth0Sync(Auth0Credentials(tenant.domain, client.client_id, client.client_secret)) as sync:
        result = await sync.ensure_log_stream(desired(), relay_ready=True)
    assert (result.ok, result.reason) == (False, auth0_sync.MISSING_SCOPE)
    assert "create:log_streams" in result.message and "update:log_streams" in result.message
    assert [r.path for r in tenant.requests()] == ["/oauth/token"]
    assert LOG_STREAM_SCOPES >= {"create:log_streams", "update:log_streams"}


async def test_removal_deletes_our_stream(setup: Setup) -> None:
    async with setup.sync() as sync:
        created = await sync.ensure_log_stream(desired(T1, T2), relay_ready=True)
        # found by its token too, e.g. after spec.relay.publicUrl changed
        removed = await sync.remove_log_stream(desired(T1, T2, endpoint="https://new.shop.example/v1/auth0-logs"))
        assert removed == [f"log stream {NAME!r} ({created.stream_id})"]
        assert streams(setup) == []
        assert await sync.remove_log_stream(desired(T1, T2)) == []
