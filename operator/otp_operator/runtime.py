"""Process-wide state of a running operator: configuration, API adapters, wake-ups, memories.

Everything in ``ChannelMemory`` is an optimisation or a nicety (event wording, skipping
unchanged Auth0 checks); losing it on a restart costs a few reads, never correctness.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from . import metrics, names
from .endpoints import EndpointPolicy
from .kube import KubeApi


@dataclass(frozen=True)
class OperatorConfig:
    relay_image: str = field(default_factory=names.default_relay_image)
    drift_interval: float = names.DEFAULT_DRIFT_INTERVAL_SECONDS
    rotation_grace: float = 30.0  # seconds the old signing key stays after Auth0 has the new one
    auth0_concurrency_per_tenant: int = 4
    progress_recheck: float = 60.0  # safety net while waiting for a rollout without events
    max_concurrent_reconciles: int = 32  # bounds API bursts and peak memory with many channels
    namespaced: bool = False  # watching listed namespaces only: no cluster-wide permissions
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)  # extra allowed Auth0/8x8 hosts


@dataclass
class ChannelMemory:
    child_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # kind/name -> (uid, version)
    child_digests: dict[str, str] = field(default_factory=dict)  # kind/name -> digest of what we applied
    absent_confirmed: set[str] = field(default_factory=set)
    auth0_input: str | None = None
    auth0_checked: float = 0.0  # monotonic time of the last successful ensure()
    auth0_failures: int = 0
    last_reason: str = ""
    generation_seen_at: dict[int, float] = field(default_factory=dict)
    ready_generation: int | None = None
    last_credentials: Any = None  # Auth0Credentials, kept for deletion after the Secret is gone
    last_trigger: tuple[Any, ...] = ()
    children_dirty: bool = True  # a child changed (or vanished) other than by our last apply
    children_applied_at: float = 0.0  # monotonic time of the last full apply


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


def _newer(candidate: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether ``candidate`` is at least as new as ``current`` (resourceVersions are etcd revisions
    in practice; when they are not numbers, the latest arrival wins)."""
    if current is None:
        return True
    new_rv = str((candidate.get("metadata") or {}).get("resourceVersion", ""))
    old_rv = str((current.get("metadata") or {}).get("resourceVersion", ""))
    if new_rv.isdigit() and old_rv.isdigit():
        return int(new_rv) >= int(old_rv)
    return True


_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "labels")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What reconciles read of a cached object (managedFields and the like are most of its size)."""
    meta = obj.get("metadata") or {}
    slim: dict[str, Any] = {"metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta}}
    for field_ in ("data", "status"):
        if field_ in obj:
            slim[field_] = obj[field_]
    spec = obj.get("spec")
    if isinstance(spec, dict):  # a Deployment: what relay_rollout reads
        template_meta = (spec.get("template") or {}).get("metadata") or {}
        slim["spec"] = {"replicas": spec.get("replicas", 1),
                        "template": {"metadata": {"annotations": template_meta.get("annotations") or {}}}}
    return slim


def child_token(obj: dict[str, Any]) -> tuple[str, str]:
    """Changes with spec edits: generation where the kind has one (status updates leave it alone),
    resourceVersion otherwise."""
    meta = obj.get("metadata") or {}
    return str(meta.get("uid")), str(meta.get("generation") or meta.get("resourceVersion"))


class ObjectCache:
    """The latest body of each watched object of interest (children, referenced Secrets).

    ``None`` records an object known to be absent (seen deleted), so a reconcile need not ask.
    """

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    def known(self, kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in self._objects

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def put(self, kind: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        key = (kind, namespace, name)
        if _newer(obj, self._objects.get(key)):
            self._objects[key] = _slim(obj)

    def gone(self, kind: str, namespace: str, name: str) -> None:
        self._objects[(kind, namespace, name)] = None

    def drop(self, kind: str, namespace: str, name: str) -> None:
        self._objects.pop((kind, namespace, name), None)


class Runtime:
    def __init__(self, config: OperatorConfig) -> None:
        from .auth0_pool import Auth0Pool  # imported here so the pure modules load without it

        self.config = config
        self.kube: KubeApi | None = None
        self.wakeups = Wakeups()
        self.auth0 = Auth0Pool(config.auth0_concurrency_per_tenant)
        self.memories: dict[tuple[str, str], ChannelMemory] = {}
        self.cache = ObjectCache()
        self.reconcile_slots = asyncio.Semaphore(config.max_concurrent_reconciles)

    async def start(self) -> None:
        self.kube = KubeApi.from_environment()

    async def close(self) -> None:
        await self.auth0.close()
        if self.kube is not None:
            await self.kube.close()

    def memory(self, namespace: str, name: str) -> ChannelMemory:
        return self.memories.setdefault((namespace, name), ChannelMemory())

    async def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """From the watch cache when it knows the object, else one GET (then cached)."""
        if self.cache.known(kind, namespace, name):
            return self.cache.get(kind, namespace, name)
        assert self.kube is not None
        obj = await self.kube.get(api_version, kind, namespace, name)
        if obj is None:
            self.cache.gone(kind, namespace, name)
        else:
            self.cache.put(kind, namespace, name, obj)
        return obj

    def observe_child(self, kind: str, namespace: str, channel: str, obj: dict[str, Any], deleted: bool) -> None:
        """A watch event for one of a channel's children: cache it; mark the channel dirty
        when the child differs from what our last apply produced."""
        name = (obj.get("metadata") or {}).get("name", "")
        memory = self.memories.get((namespace, channel))
        if deleted:
            self.cache.gone(kind, namespace, name)
        else:
            self.cache.put(kind, namespace, name, obj)
        if memory is not None:
            key = f"{kind}/{name}"
            if deleted or memory.child_tokens.get(key) != child_token(obj):
                memory.children_dirty = True

    def forget(self, namespace: str, name: str) -> None:
        memory = self.memories.pop((namespace, name), None)
        if memory is not None and memory.ready_generation is not None:
            metrics.READY_CHANNELS.dec()


def digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(repr(part).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()


def monotonic() -> float:
    return time.monotonic()
