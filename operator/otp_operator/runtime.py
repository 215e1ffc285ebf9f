"""Process-wide state of a running operator: configuration, API adapters, wake-ups, memories.

Everything in ``ChannelMemory`` is an optimisation or a nicety (event wording, skipping
unchanged Auth0 checks); losing it on a restart costs a few reads, never correctness. It is one
small dataclass per concern (children, Auth0, report), so a phase reads and writes only its own.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from . import metrics, names, render, status
from .egress import RelayEgress
from .endpoints import EndpointPolicy
from .kube import KubeApi
from .secrets import watched


@dataclass(frozen=True)
class OperatorConfig:
    relay_image: str = field(default_factory=names.default_relay_image)
    drift_interval: float = names.DEFAULT_DRIFT_INTERVAL_SECONDS
    rotation_grace: float = names.DEFAULT_ROTATION_GRACE_SECONDS
    key_propagation: float = names.DEFAULT_KEY_PROPAGATION_SECONDS
    auth0_concurrency_per_tenant: int = 4
    progress_recheck: float = 60.0  # safety net while waiting for a rollout without events
    max_concurrent_reconciles: int = 64  # bounds API bursts and peak memory with many channels
    namespaced: bool = False  # watching listed namespaces only: no cluster-wide permissions
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)  # extra allowed Auth0/8x8 hosts
    egress: RelayEgress = field(default_factory=RelayEgress)  # the relay NetworkPolicy's DNS and cluster ranges
    # Cached Secrets and children not confirmed by a watch event or a read for this long are read
    # again: a watch that reconnects after its history expired never reports what was deleted.
    cache_ttl: float = 300.0
    peering_lifetime: float = 15.0  # seconds a silent peer counts as alive (bounds the HA takeover)
    secret_grace: float = 300.0  # seconds a missing referenced Secret is awaited before Stalled


ChildKey = NewType("ChildKey", str)


def child_key(kind: str, name: str) -> ChildKey:
    """How the memories name one child of a channel (its namespace is the channel's)."""
    return ChildKey(f"{kind}/{name}")


@dataclass
class ChildrenMemory:
    tokens: dict[ChildKey, tuple[str, str]] = field(default_factory=dict)  # -> (uid, version) our apply left
    digests: dict[ChildKey, str] = field(default_factory=dict)  # -> digest of what we applied
    absent_confirmed: set[ChildKey] = field(default_factory=set)  # children the spec dropped, seen gone
    dirty: bool = True  # a child changed (or vanished) other than by our last apply
    applying: bool = False  # an apply is in flight: its events are judged once it answered
    # Monotonic time the relay was first seen rolled out (or scaled to 0) after our last apply;
    # None until then. The drift timer counts from here: it never re-applies what has not converged.
    converged_at: float | None = None
    secrets_checksum: str = ""  # of the last pass, for reading the Deployment's events
    rollout_seen: tuple[Any, ...] | None = None  # rollout_signal the last pass saw


@dataclass(frozen=True)
class Prepared:
    """What Auth0Sync.prepare made while the relay rolled out (None: nothing), for that input."""

    auth0_input: str
    recorded: dict[str, Any] | None


@dataclass
class Auth0Memory:
    synced_input: str | None = None  # digest of the Auth0 input of the last successful ensure()
    checked_at: float = 0.0  # monotonic time of the last successful ensure()
    failures: int = 0
    prepared: Prepared | None = None
    last_credentials: Any = None  # Auth0Credentials, kept for deletion after the Secret is gone
    credentials_secret: str = ""  # the Auth0 credentials Secret the last reconcile protected
    # spec.conversion: (digest of the log stream's input, monotonic time) of the last ensure
    log_stream_checked: tuple[str, float] | None = None


@dataclass
class ReportMemory:
    last_reason: str = ""  # the failure reason of the last Event (one Event per new reason)
    generation_seen_at: dict[int, float] = field(default_factory=dict)  # wall time, for time-to-ready
    ready_generation: int | None = None


@dataclass
class ChannelMemory:
    children: ChildrenMemory = field(default_factory=ChildrenMemory)
    auth0: Auth0Memory = field(default_factory=Auth0Memory)
    report: ReportMemory = field(default_factory=ReportMemory)
    # per referenced Secret ("8x8 API key", "Auth0 credentials", ...): wall time it was first
    # found missing, the start of its own grace
    secrets_missing_since: dict[str, float] = field(default_factory=dict)
    last_trigger: tuple[Any, ...] = ()  # what of the channel's last event may start a reconcile


class Clock:
    """Wall and monotonic time, as reconcile reads them (tests pass a fake)."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def stamp(self) -> str:
        """The wall time as status timestamps are written."""
        return datetime.datetime.fromtimestamp(self.wall(), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Wakeups:
    """One asyncio.Event per channel; watch handlers kick, the channel's loop waits."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    def register(self, namespace: str, name: str) -> asyncio.Event:
        return self._events.setdefault((namespace, name), asyncio.Event())

    def unregister(self, namespace: str, name: str) -> None:
        self._events.pop((namespace, name), None)

    def kick(self, namespace: str, name: str) -> bool:
        event = self._events.get((namespace, name))
        if event is None:
            return False
        event.set()
        return True


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "labels", "ownerReferences",
                  "finalizers", "deletionTimestamp")


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of what reconciles read of an object (managedFields and the like are most of its
    size, so copying only this is what makes caching each watch event cheap)."""
    meta = obj.get("metadata") or {}
    slim: dict[str, Any] = {"metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta}}
    for field_ in ("data", "status"):
        if field_ in obj:
            slim[field_] = obj[field_]
    spec = obj.get("spec")
    if isinstance(spec, Mapping):  # a Deployment: what relay_rollout reads
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        slim["spec"] = {"replicas": spec.get("replicas", 1),
                        "template": {"metadata": {"annotations": template_meta.get("annotations") or {}}}}
    return copy.deepcopy(slim)


def read_rollout(deployment: Mapping[str, Any] | None, secrets_checksum: str) -> tuple[render.Rollout, status.Verdict]:
    """The relay Deployment's rollout and the RelayAvailable verdict of it."""
    rollout = render.relay_rollout(deployment, secrets_checksum)
    return rollout, status.relay_verdict(deployment, rollout.rolled_out, rollout.available, rollout.message)


def rollout_signal(rollout: render.Rollout, verdict: status.Verdict) -> tuple[Any, ...]:
    """What of the relay Deployment a channel's status reflects: a watch event that leaves it as
    it was (the controller's intermediate status updates) starts no pass."""
    return rollout.rolled_out, rollout.available, verdict.status, verdict.reason


def child_token(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Changes with spec edits: generation where the kind has one (status updates leave it alone),
    resourceVersion otherwise."""
    meta = obj.get("metadata") or {}
    return str(meta.get("uid")), str(meta.get("generation") or meta.get("resourceVersion"))


class ObjectCache:
    """The latest body of each watched object of interest (children, referenced Secrets).

    ``None`` records an object known to be absent (seen deleted), so a reconcile need not ask.
    resourceVersions are opaque (only equality means anything), so ordering comes from arrival:
    a watch stream delivers one object's events in order, so an event always replaces; a read
    (GET, apply response) replaces only when no event for that object arrived while it was in
    flight. Entries not confirmed for ``ttl`` seconds count as unknown (read again).
    """

    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._objects: dict[tuple[str, str, str], tuple[dict[str, Any] | None, float]] = {}
        self._events: dict[tuple[str, str, str], int] = {}  # events seen per object (for reads)
        self._ttl = ttl
        self._clock = clock

    def known(self, kind: str, namespace: str, name: str) -> bool:
        entry = self._objects.get((kind, namespace, name))
        return entry is not None and self._clock() - entry[1] < self._ttl

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        entry = self._objects.get((kind, namespace, name))
        return None if entry is None else entry[0]

    def marker(self, kind: str, namespace: str, name: str) -> int:
        """Taken before a read; ``stored`` accepts the read only if no event came in between."""
        return self._events.get((kind, namespace, name), 0)

    def observed(self, kind: str, namespace: str, name: str, obj: Mapping[str, Any] | None) -> None:
        """A watch event: the newest state (``None``: deleted)."""
        key = (kind, namespace, name)
        self._events[key] = self._events.get(key, 0) + 1
        self._objects[key] = (None if obj is None else _slim(obj), self._clock())

    def stored(self, kind: str, namespace: str, name: str, obj: dict[str, Any] | None, marker: int) -> None:
        """The result of our own read or write, taken after ``marker``."""
        key = (kind, namespace, name)
        if kind == "Secret" and not watched(obj):
            # No watch event would tell us when it changes (or appears): read it again next time.
            self._objects.pop(key, None)
            return
        if self._events.get(key, 0) == marker:
            self._objects[key] = (None if obj is None else _slim(obj), self._clock())

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self._objects.pop((kind, namespace, name), None)
        self._events.pop((kind, namespace, name), None)


class ChannelGuard:
    """Serialises one channel's reconciles and its deletion, and tells an in-flight reconcile
    that deletion has begun (so it stops before its next Auth0 write)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.deleting = False


class ChannelDeleting(Exception):
    """Raised before a write when the channel's deletion has begun; the reconcile stops."""


def jittered(base: float) -> float:
    """``base`` seconds spread by +-20 % so channels failing together do not retry together."""
    return base * random.uniform(0.8, 1.2)


class Runtime:
    def __init__(self, config: OperatorConfig, kube: KubeApi, clock: Clock | None = None) -> None:
        from .auth0_pool import Auth0Pool  # imported here so the pure modules load without it

        self.config = config
        self.kube = kube
        self.clock = clock or Clock()
        self.wakeups = Wakeups()
        self.auth0 = Auth0Pool(config.auth0_concurrency_per_tenant)
        self.memories: dict[tuple[str, str], ChannelMemory] = {}
        self.cache = ObjectCache(config.cache_ttl, self.clock.monotonic)
        self.reconcile_slots = asyncio.Semaphore(config.max_concurrent_reconciles)
        # The same bound for deferred Auth0 work (Pass.deferred), held apart so that channels
        # waiting on Auth0 never keep others from their Kubernetes work.
        self.auth0_slots = asyncio.Semaphore(config.max_concurrent_reconciles)
        self.guards: dict[str, ChannelGuard] = {}  # by channel uid (a re-created channel is another)

    def guard(self, uid: str) -> ChannelGuard:
        return self.guards.setdefault(uid, ChannelGuard())

    def mark_deleting(self, uid: str) -> None:
        self.guard(uid).deleting = True

    def check_not_deleting(self, body: Mapping[str, Any]) -> None:
        """Before each write of a reconcile: stop if the channel's deletion has begun (seen by
        the delete handler, the event handler, or in kopf's live body of the daemon)."""
        meta = body.get("metadata") or {}
        guard = self.guards.get(str(meta.get("uid")))
        if meta.get("deletionTimestamp") or (guard is not None and guard.deleting):
            raise ChannelDeleting(f"{meta.get('namespace')}/{meta.get('name')} is being deleted")

    async def close(self) -> None:
        await self.auth0.close()
        await self.kube.close()

    def memory(self, namespace: str, name: str) -> ChannelMemory:
        return self.memories.setdefault((namespace, name), ChannelMemory())

    async def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """From the watch cache when it knows the object, else one GET (then cached)."""
        if self.cache.known(kind, namespace, name):
            return self.cache.get(kind, namespace, name)
        marker = self.cache.marker(kind, namespace, name)
        obj = await self.kube.get(api_version, kind, namespace, name)
        self.cache.stored(kind, namespace, name, obj, marker)
        return obj

    def observe_child(self, kind: str, namespace: str, channel: str, obj: Mapping[str, Any], deleted: bool) -> bool:
        """A watch event for one of a channel's children: cache it; whether the channel should
        look at it: the child differs from what our last apply produced (it is marked dirty), or
        the relay's rollout moved. Our own applies coming back start no pass."""
        name = (obj.get("metadata") or {}).get("name", "")
        memory = self.memories.get((namespace, channel))
        self.cache.observed(kind, namespace, name, None if deleted else obj)
        if memory is None:
            return True
        known = memory.children
        if known.applying:
            return False  # the apply judges its events once it has the tokens (_changed_by_others)
        if deleted or known.tokens.get(child_key(kind, name)) != child_token(obj):
            known.dirty = True
            return True
        return kind == names.DEPLOYMENT.kind and rollout_signal(*read_rollout(obj, known.secrets_checksum)) != known.rollout_seen

    def forget(self, namespace: str, name: str) -> None:
        memory = self.memories.pop((namespace, name), None)
        if memory is not None and memory.report.ready_generation is not None:
            metrics.READY_CHANNELS.dec()


def digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(repr(part).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()

