"""reconcile() against a fake world, one row per situation (cert-manager's TestProcessItem is the
model): an in-memory Kubernetes that records every write, a fake Auth0 pool that records every
call, and a fake clock. Each row runs the passes that lead to its situation, then one pass, and
checks what that pass wrote: status (at most once), children, Auth0, and when to come back.

No cluster, no sockets, no sleeping: the clock only moves when a row moves it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf
import pytest

from otp_operator import handlers, names, reconcile, secret_watch, status
from otp_operator.auth0 import Auth0Error, SyncResult
from otp_operator.auth0.errors import UNAVAILABLE
from otp_operator.kube import Applied
from otp_operator.runtime import ChannelDeleting, Clock, OperatorConfig, Runtime
from otp_operator.spec import parse_channel

NAMESPACE, NAME, UID = "shop", "prod", "uid-prod"
GRACE = 60.0
SPEC: dict[str, Any] = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {"replicas": 1, "publicUrl": "https://otp.shop.example/prod"},
}


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class FakeClock(Clock):
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class FakeKube:
    """The API server as the operator uses it: objects by (kind, namespace, name), every write
    recorded as (verb, kind, name); the channel's status patches merged into its body (as
    kopf's live body would show them to the next pass)."""

    def __init__(self, channel: dict[str, Any]) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.status_writes: list[dict[str, Any]] = []
        self.channel = channel
        self._version = 0

    def _next(self) -> str:
        self._version += 1
        return str(self._version)

    def put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}-{obj['kind']}")
        meta["resourceVersion"] = self._next()
        self.objects[obj["kind"], meta["namespace"], meta["name"]] = obj

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    find = get

    async def get_metadata(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj["metadata"]) if obj is not None else None

    async def apply(self, manifest: Mapping[str, Any]) -> Applied:
        kind, meta = manifest["kind"], manifest["metadata"]
        self.writes.append(("apply", kind, meta["name"]))
        before = self.objects.get((kind, meta["namespace"], meta["name"]))
        obj = copy.deepcopy(dict(manifest))
        if before is not None:
            obj["metadata"]["uid"] = before["metadata"]["uid"]
            obj["status"] = before.get("status", {})
        if kind != "Secret":
            generation = int((before or {}).get("metadata", {}).get("generation") or 0)
            changed = before is None or before.get("spec") != obj.get("spec")
            obj["metadata"]["generation"] = generation + 1 if changed else generation
        self.put(obj)
        return Applied(copy.deepcopy(obj), created=before is None)

    async def patch(self, api_version: str, kind: str, namespace: str, name: str, body: Any,
                    content_type: str = "application/merge-patch+json") -> dict[str, Any] | None:
        self.writes.append(("patch", kind, name))
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return None
        obj["metadata"].setdefault("labels", {}).update(body["metadata"]["labels"])  # the label patch only
        self.put(obj)
        return copy.deepcopy(obj)

    async def set_finalizer(self, api_version: str, kind: str, obj: Mapping[str, Any], finalizer: str,
                            present: bool) -> None:
        self.writes.append(("finalizer", kind, obj["metadata"]["name"]))
        stored = self.objects[kind, obj["metadata"]["namespace"], obj["metadata"]["name"]]
        finalizers = [f for f in stored["metadata"].get("finalizers", []) if f != finalizer]
        stored["metadata"]["finalizers"] = [*finalizers, finalizer] if present else finalizers
        self.put(stored)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str,
                     propagation: str | None = None) -> bool:
        self.writes.append(("delete", kind, name))
        return self.objects.pop((kind, namespace, name), None) is not None

    async def patch_channel_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self.status_writes.append(copy.deepcopy(dict(patch)))
        current = self.channel.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = copy.deepcopy(value)

    async def close(self) -> None:
        pass

    def children_applied(self) -> list[str]:
        return [kind for verb, kind, _ in self.writes if verb == "apply"]


class FakeAuth0:
    """Auth0Pool's interface; ``error`` makes ensure() fail with it. Each call runs the guard
    the caller passed, as the real client does before each write."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.error: Auth0Error | None = None

    async def ensure(self, credentials: Any, desired: Any, recorded: Any, record_routing: Any = None, *,
                     guard: Callable[[], None] | None = None) -> SyncResult:
        if guard is not None:
            guard()
        self.calls.append("ensure")
        if self.error is not None:
            raise self.error
        return SyncResult(integration=desired.integration, action_id="act-1", hook_id=None, provider_id="pro-1",
                          deployed_version=1, secrets_hash="h", fingerprint="f", created=recorded is None, writes=3)

    async def prepare(self, credentials: Any, desired: Any, *, guard: Callable[[], None] | None = None) -> None:
        self.calls.append("prepare")

    async def remove(self, credentials: Any, *, owner: str, integration: str, name: str, recorded: Any = None,
                     guard: Callable[[], None] | None = None) -> list[str]:
        self.calls.append("remove")
        if self.error is not None:
            raise self.error
        return []

    def warm_up(self, credentials: Any) -> None:
        pass

    async def close(self) -> None:
        pass


class World:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.body: dict[str, Any] = {
            "apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"namespace": NAMESPACE, "name": NAME, "uid": UID, "generation": 1,
                         "creationTimestamp": "2027-01-15T08:00:00Z"},
            "spec": copy.deepcopy(SPEC),
        }
        self.kube = FakeKube(self.body)
        self.clock = FakeClock()
        self.auth0 = FakeAuth0()
        self.rt = Runtime(OperatorConfig(secret_grace=GRACE), self.kube, self.clock)  # type: ignore[arg-type]
        self.rt.auth0 = self.auth0  # type: ignore[assignment]
        self.events: list[tuple[str, str]] = []
        for post in ("info", "warn"):
            monkeypatch.setattr(kopf, post, lambda body, *, reason, message, _post=post:
                                self.events.append((reason, message)))
        self.delay: float | None = None

    def secret(self, name: str, **data: str) -> None:
        self.kube.put({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"namespace": NAMESPACE, "name": name},
                       "data": {key: _b64(value) for key, value in data.items()}})

    def with_secrets(self) -> "World":
        self.secret("eightbyeight", apikey="8x8-key")
        self.secret("auth0", client_id="cid", client_secret="csecret")
        return self

    def roll_out(self) -> None:
        """The Deployment controller's part: every replica updated and available, reported by
        the watch as it would be."""
        deployment = self.kube.objects["Deployment", NAMESPACE, names.relay_name(NAME)]
        replicas = deployment["spec"].get("replicas", 1)
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True"}],
        }
        self.kube.put(deployment)
        self.rt.observe_child("Deployment", NAMESPACE, NAME, copy.deepcopy(deployment), deleted=False)

    def forget_writes(self) -> None:
        self.kube.writes.clear()
        self.kube.status_writes.clear()
        self.auth0.calls.clear()
        self.events.clear()

    async def run(self) -> float | None:
        self.delay = await reconcile.reconcile(self.rt, self.body, logging.getLogger("test"), {})
        return self.delay

    def condition(self, type_: str) -> Mapping[str, Any]:
        return status.find((self.body.get("status") or {}).get("conditions"), type_) or {}


async def new_channel(world: World) -> None:
    world.with_secrets()


async def relay_available(world: World) -> None:
    world.with_secrets()
    await world.run()
    world.roll_out()


async def nothing_changed(world: World) -> None:
    await relay_available(world)
    await world.run()


async def key_missing(world: World) -> None:
    world.secret("auth0", client_id="cid", client_secret="csecret")


async def key_missing_past_grace(world: World) -> None:
    await key_missing(world)
    await world.run()
    world.clock.now += GRACE + 1


async def auth0_unavailable(world: World) -> None:
    await relay_available(world)
    world.auth0.error = Auth0Error(UNAVAILABLE, "Auth0 tenant shop.eu.auth0.com answered 503 to GET /actions")


async def deletion_began(world: World) -> None:
    world.with_secrets()
    world.body["metadata"]["deletionTimestamp"] = "2027-01-15T09:00:00Z"


async def deletion_began_mid_sync(world: World) -> None:
    await relay_available(world)
    world.rt.mark_deleting(UID)  # seen by the delete handler while this channel's loop runs


DRIFT = OperatorConfig().drift_interval


async def still_rolling_out_past_drift(world: World) -> None:
    world.with_secrets()
    await world.run()
    world.clock.now += DRIFT + 1  # the relay has not rolled out yet (pods still starting, say)


async def rolled_out_past_drift(world: World) -> None:
    await nothing_changed(world)
    world.clock.now += DRIFT + 1


@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    given: Callable[[World], Awaitable[None]]
    ready: tuple[str, str] | None  # Ready's (status, reason) after the pass; None: the pass stopped
    status_writes: int
    children: tuple[str, ...] = ()  # kinds applied by the pass
    auth0: tuple[str, ...] = ()  # Auth0 calls of the pass
    delay: tuple[float, float] | None = None  # bounds of when to come back (jitter: +-20 %)
    progress: str | None = None  # Reconciling or Stalled (True), or None for neither
    also: Callable[[World], None] | None = None


CHILDREN = ("Secret", "Deployment", "Service", "NetworkPolicy", "Secret")


def _auth0_synced(world: World) -> None:
    assert world.condition(status.AUTH0_SYNCED)["status"] == "True"
    assert world.body["status"]["auth0"]["actionId"] == "act-1"
    assert [reason for reason, _ in world.events] == ["Auth0Created"]


def _says_what_failed(world: World) -> None:
    synced = world.condition(status.AUTH0_SYNCED)
    assert synced["status"] == "False" and synced["reason"] == UNAVAILABLE
    assert "answered 503 to GET /actions" in synced["message"]
    assert world.rt.memory(NAMESPACE, NAME).auth0.failures == 1


def _waiting_for_key(world: World) -> None:
    relay = world.condition(status.RELAY_AVAILABLE)
    assert relay["reason"] == status.WAITING_FOR_SECRET and f"{int(GRACE)}s more" in relay["message"]


def _nothing_labelled_or_applied(world: World) -> None:
    assert world.kube.children_applied() == [] and "status" not in world.body


ROWS = [
    Row("new channel: children applied, not Ready yet, prepares Auth0", new_channel,
        ready=("False", "Progressing"), status_writes=1, children=CHILDREN, auth0=("prepare",),
        delay=(59.9, 60.1), progress=status.RECONCILING),
    Row("relay available: Auth0 synced, Ready", relay_available,
        ready=("True", "Ready"), status_writes=1, auth0=("ensure",), progress=None, also=_auth0_synced),
    # Nothing to write: status already says all of it (only changed fields are ever patched).
    Row("nothing changed: no apply, no Auth0 call, no write", nothing_changed,
        ready=("True", "Ready"), status_writes=0, progress=None),
    Row("8x8 key missing within the grace: waiting, looked for again in 1 s", key_missing,
        ready=("False", status.WAITING_FOR_SECRET), status_writes=1, delay=(1.0, 1.0),
        progress=status.RECONCILING, also=_waiting_for_key),
    Row("8x8 key missing past the grace: SecretNotFound, Stalled", key_missing_past_grace,
        ready=("False", "SecretNotFound"), status_writes=1, delay=(secret_watch.STALLED_RECHECK,) * 2,
        progress=status.STALLED),
    Row("Auth0 unavailable: backoff, and the condition says what failed", auth0_unavailable,
        ready=("False", UNAVAILABLE), status_writes=1, auth0=("ensure",), delay=(1.6, 2.4),
        progress=status.RECONCILING, also=_says_what_failed),
    # The drift timer counts from convergence: it never re-applies what has not converged once.
    Row("relay still rolling out after the drift interval: nothing re-applied", still_rolling_out_past_drift,
        ready=("False", "Progressing"), status_writes=0, delay=(59.9, 60.1), progress=status.RECONCILING),
    Row("rolled out, drift interval passed: children re-applied, Auth0 checked", rolled_out_past_drift,
        ready=("True", "Ready"), status_writes=1, children=CHILDREN, auth0=("ensure",), progress=None),
    Row("deletion began: the pass stops before its first apply", deletion_began,
        ready=None, status_writes=0, also=_nothing_labelled_or_applied),
    Row("deletion began during the pass: stops before the Auth0 write", deletion_began_mid_sync,
        ready=None, status_writes=0),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
async def test_reconcile(row: Row, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    await row.given(world)
    world.forget_writes()
    if row.ready is None:
        with pytest.raises(ChannelDeleting):
            await world.run()
    else:
        await world.run()
        ready = world.condition(status.READY)
        assert (ready.get("status"), ready.get("reason")) == row.ready, ready
        progress = [t for t in (status.RECONCILING, status.STALLED) if world.condition(t).get("status") == "True"]
        assert progress == ([row.progress] if row.progress else []), progress
        if row.delay is None:
            assert world.delay is None or world.delay >= 60.0, world.delay  # the drift timer
        else:
            assert world.delay is not None and row.delay[0] <= world.delay <= row.delay[1], world.delay
    assert len(world.kube.status_writes) == row.status_writes, world.kube.status_writes
    assert tuple(world.kube.children_applied()) == row.children
    assert tuple(world.auth0.calls) == row.auth0
    if row.also is not None:
        row.also(world)


async def test_a_blocked_deletion_says_why_through_the_one_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deletion waits for the Auth0 side: one status write naming the failure (and none for
    the same failure again), the RelayAvailable condition left as it was."""
    world = World(monkeypatch)
    await relay_available(world)
    await world.run()
    world.forget_writes()
    world.auth0.error = Auth0Error(UNAVAILABLE, "Auth0 tenant shop.eu.auth0.com answered 503 to DELETE")
    channel = parse_channel(NAMESPACE, NAME, world.body["spec"])
    relay_before = dict(world.condition(status.RELAY_AVAILABLE))
    for _ in range(2):
        with pytest.raises(kopf.TemporaryError):
            await handlers._clean_up(world.rt, channel, world.body, retry=0)  # type: ignore[arg-type]
    assert len(world.kube.status_writes) == 1, world.kube.status_writes
    synced = world.condition(status.AUTH0_SYNCED)
    assert synced["status"] == "False" and synced["reason"] == UNAVAILABLE and "503 to DELETE" in synced["message"]
    assert world.condition(status.RELAY_AVAILABLE) == relay_before
    assert "observedGeneration" not in world.kube.status_writes[0]
    assert world.auth0.calls == ["remove", "remove"]
    assert [reason for reason, _ in world.events] == [UNAVAILABLE]


async def test_only_child_events_that_matter_start_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own applies coming back and the controller's intermediate status updates start no
    pass; the relay becoming available, and an edit by someone else, do."""
    world = World(monkeypatch)
    world.with_secrets()
    await world.run()
    deployment = copy.deepcopy(world.kube.objects["Deployment", NAMESPACE, names.relay_name(NAME)])
    service = copy.deepcopy(world.kube.objects["Service", NAMESPACE, names.relay_name(NAME)])

    def seen(obj: dict[str, Any]) -> bool:
        return world.rt.observe_child(obj["kind"], NAMESPACE, NAME, copy.deepcopy(obj), deleted=False)

    assert not seen(deployment) and not seen(service)  # what our apply left
    deployment["status"] = {"observedGeneration": deployment["metadata"]["generation"], "replicas": 1,
                            "updatedReplicas": 1, "availableReplicas": 0}
    assert not seen(deployment)  # still waiting for its replica: the status already says so
    deployment["status"] |= {"availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    assert seen(deployment)
    service["metadata"]["generation"] = int(service["metadata"].get("generation") or 0) + 1  # someone's edit
    service["metadata"]["resourceVersion"] = "edited-by-someone"
    assert seen(service)
    assert world.rt.memory(NAMESPACE, NAME).children.dirty
