"""kopf wiring: indices, watches that kick channel loops, the per-channel loop, the finalizer.

Each channel runs one long-lived loop (a kopf daemon) that reconciles whenever it is kicked
(its spec, a referenced Secret or one of its children changed) or its timer expires (drift
check, retry backoff). Watches on children and Secrets only kick; they never reconcile inline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from . import cleanup, endpoints, heap, metrics, names, secret_watch, status
from .auth0 import Auth0Error
from .receipt_tokens import LOG_STREAM
from .reconcile import credentials_for, desired_log_stream, reconcile, report_deletion_blocked, report_error
from .runtime import ChannelDeleting, Runtime, jittered
from .secrets import SecretProblem
from .spec import SpecError, parse_channel

CHANNELS = names.CHANNEL_RESOURCE
MANAGED = {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}


def _runtime(memo: Any) -> Runtime:
    return memo.runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled" copy of each channel: the operator has no create/update handlers (each
    channel's loop reads the whole body), so kopf's annotation would only cost a PATCH and one more
    watch event per spec change, and a deep copy of the body per event."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.ANNOTATION_PREFIX_KOPF)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    settings.posting.reporting_component = names.OPERATOR_NAME
    settings.posting.loggers = False  # Events only from explicit kopf.info/warn, never log lines
    settings.watching.server_timeout = 300
    # kopf waits this long for more events of one object before handling them; the channel loop
    # coalesces its own kicks, so a short window only makes reactions (e.g. relay Available) faster.
    settings.batching.batch_window = 0.02
    settings.networking.request_timeout = 60
    # A standby takes over at most this long after the active operator died without a goodbye
    # (a clean exit hands over at once); the keep-alive is sent a few seconds more often.
    settings.peering.lifetime = int(_runtime(memo).config.peering_lifetime)
    # With listed namespaces the operator holds Roles only: scanning CRDs and namespaces
    # cluster-wide would be refused (and retried) for nothing.
    settings.scanning.disabled = _runtime(memo).config.namespaced
    # Server-side: the API server lists and watches for the operator only the Secrets it labelled
    # or created (secret_watch), never the cluster's others.
    settings.watching.label_selectors["v1", "secrets"] = names.SECRET_WATCH_SELECTOR


@kopf.on.startup()
async def start_heap_trimming(memo: Any, **_: Any) -> None:
    memo.heap_trimming = asyncio.ensure_future(heap.trim_periodically())


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    trimming = getattr(memo, "heap_trimming", None)
    if trimming is not None:
        trimming.cancel()
    await _runtime(memo).close()


# --- indices ---------------------------------------------------------------------------------

@kopf.index(*CHANNELS)
async def channels_by_secret(namespace: str, name: str, spec: Mapping[str, Any], **_: Any) -> dict[Any, str]:
    """(namespace, Secret name) -> channel names that read it."""
    return {(namespace, secret): name for secret in secret_watch.referenced(namespace, name, spec)}


@kopf.index(*CHANNELS)
async def channels_needing_credentials(namespace: str, name: str, spec: Mapping[str, Any], **_: Any) -> dict[Any, str]:
    """(namespace, Auth0 credentials Secret) -> channels whose deletion will call Auth0 with it."""
    try:
        channel = parse_channel(namespace, name, spec)
    except SpecError:
        return {}
    if not cleanup.needs_credentials(channel):
        return {}
    return {(namespace, channel.auth0.credentials_secret): name}


@kopf.index(*CHANNELS)
async def channels_by_tenant(namespace: str, name: str, spec: Mapping[str, Any],
                             **_: Any) -> dict[Any, tuple[str, str]]:
    """Auth0 domain -> channels on that tenant (to hand over an integration point on delete)."""
    domain = ((spec or {}).get("auth0") or {}).get("domain")
    return {domain: (namespace, name)} if domain else {}


# --- kicks -----------------------------------------------------------------------------------

@kopf.on.event(*CHANNELS)
async def channel_changed(type: str, body: Mapping[str, Any], memo: Any, **_: Any) -> None:
    meta = body.get("metadata") or {}
    rt = _runtime(memo)
    if type == "DELETED":
        rt.guards.pop(str(meta.get("uid")), None)
        return
    if meta.get("deletionTimestamp"):  # an in-flight reconcile stops before its next write
        rt.mark_deleting(str(meta.get("uid")))
        rt.wakeups.kick(meta["namespace"], meta["name"])
        return
    annotations = meta.get("annotations") or {}
    # status.canary too: the delivery timer writes it, the reconcile makes Delivering of it
    canary = json.dumps((body.get("status") or {}).get("canary"), sort_keys=True)
    trigger = (meta.get("generation"), annotations.get(names.ANNOTATION_ROTATE_SIGNING_KEY),
               annotations.get(names.ANNOTATION_ROTATE_RECEIPT_TOKEN), canary)
    mem = rt.memory(meta.get("namespace", ""), meta.get("name", ""))
    if mem.last_trigger != trigger:
        mem.last_trigger = trigger
        rt.wakeups.kick(meta["namespace"], meta["name"])


# Only labelled Secrets arrive here: configure() sets the watch's server-side label selector. No
# client-side labels= filter: a Secret whose label was removed arrives as DELETED still labelled.
@kopf.on.event("v1", "secrets")
async def secret_changed(type: str, namespace: str, name: str, labels: Mapping[str, str], body: kopf.Body,
                         memo: Any, channels_by_secret: kopf.Index, channels_needing_credentials: kopf.Index,
                         **_: Any) -> None:
    rt = _runtime(memo)
    readers = list(channels_by_secret.get((namespace, name), ()))
    owned = labels.get(names.LABEL_MANAGED_BY) == names.OPERATOR_NAME and names.LABEL_CHANNEL in labels
    if owned:
        _child_changed(names.SECRET.kind, type, namespace, labels, body, memo)
    if type == "DELETED":
        # Deleted, or only unlabelled (the watch cannot tell): the readers GET it again (and relabel).
        rt.cache.drop("Secret", namespace, name)
    elif _version(rt.cache.get("Secret", namespace, name)) == _version(body):
        readers = []  # our own label patch coming back: nothing new
    elif readers:
        rt.cache.observed("Secret", namespace, name, body)
    for channel in readers:
        rt.wakeups.kick(namespace, channel)
    if type == "DELETED":
        return
    # Level-triggered (also after a restart): protected or labelled, but no channel needs it any more.
    finalizers = (body.get("metadata") or {}).get("finalizers") or ()
    if names.FINALIZER_CREDENTIALS_IN_USE in finalizers and not channels_needing_credentials.get((namespace, name)):
        await cleanup.release_credentials(rt, namespace, name)
    if not channels_by_secret.get((namespace, name)) and labels.get(names.LABEL_SECRET) == names.SECRET_REFERENCED:
        await secret_watch.unlabel(rt, namespace, name)


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("resourceVersion")


def _child_changed(kind: str, type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body,
                   memo: Any) -> None:
    channel = labels.get(names.LABEL_CHANNEL)
    if channel:
        rt = _runtime(memo)
        if rt.observe_child(kind, namespace, channel, body, deleted=type == "DELETED"):
            rt.wakeups.kick(namespace, channel)


def _watch(child: names.ChildKind) -> None:
    async def changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                      **_: Any) -> None:
        _child_changed(child.kind, type, namespace, labels, body, memo)

    kopf.on.event(child.api_version, child.plural, labels=MANAGED, id=f"{child.plural}_changed")(changed)


for _child in names.WATCHED_CHILDREN:
    _watch(_child)


# --- the channel loop ------------------------------------------------------------------------

@kopf.daemon(*CHANNELS, cancellation_timeout=15.0)
async def channel_loop(namespace: str, name: str, uid: str, body: kopf.Body, memo: Any, logger: logging.Logger,
                       stopped: kopf.DaemonStopped, channels_needing_credentials: kopf.Index,
                       channels_by_secret: kopf.Index, **_: Any) -> None:
    rt = _runtime(memo)
    wake = rt.wakeups.register(namespace, name)
    guard = rt.guard(uid)
    metrics.CHANNELS.inc()
    failures = 0
    referenced: frozenset[str] = frozenset()  # the Secrets this channel's spec named last time
    try:
        while not stopped:
            wake.clear()
            async with guard.lock:  # never while the deletion handler runs
                if stopped or guard.deleting or body.get("metadata", {}).get("deletionTimestamp"):
                    break
                deferred: list[Callable[[], Awaitable[None]]] = []
                try:
                    async with rt.reconcile_slots:
                        delay = await reconcile(rt, body, logger, channels_needing_credentials, deferred)
                    for work in deferred:  # waits on Auth0 only: no reconcile slot held meanwhile
                        async with rt.auth0_slots:
                            if wake.is_set():  # kicked while queued (its relay is up, say): the next
                                break  # pass does what is needed at once, not a head start first
                            await work()
                    failures = 0
                except ChannelDeleting:
                    break
                except Exception as error:  # an API hiccup must not kill the loop; retry with backoff
                    failures += 1
                    delay = jittered(min(300.0, 2.0 ** min(failures, 8)))
                    metrics.RECONCILES.labels("error").inc()
                    logger.warning("reconcile failed (%s), retrying in %.0fs: %s",
                                   type(error).__name__, delay, error)
                    await report_error(rt, body, error)
                now_referenced = secret_watch.referenced(namespace, name, body.get("spec") or {})
                await secret_watch.release(rt, namespace, name, referenced - now_referenced, channels_by_secret)
                referenced = now_referenced
            await _sleep(wake, stopped, delay)
            await asyncio.sleep(0.05)  # coalesce bursts of kicks (e.g. several child events)
    finally:
        rt.wakeups.unregister(namespace, name)
        metrics.CHANNELS.dec()


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float | None) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# --- deletion --------------------------------------------------------------------------------

DELETION_RETRY_MAX = 20.0  # seconds; also how soon an abandon annotation or restored Secret is seen
DELETION_BLOCKED = "cannot remove the Auth0 side"


@kopf.on.delete(*CHANNELS)
async def channel_deleted(namespace: str, name: str, uid: str, body: kopf.Body, memo: Any, retry: int,
                          channels_by_tenant: kopf.Index, channels_needing_credentials: kopf.Index,
                          channels_by_secret: kopf.Index, **_: Any) -> None:
    """Remove the Auth0 side first (unless told not to); garbage collection takes the children."""
    rt = _runtime(memo)
    rt.mark_deleting(uid)
    rt.wakeups.kick(namespace, name)
    try:
        channel = parse_channel(namespace, name, body.get("spec") or {})
        # not the state store or image: a channel refused for those later may have reached Auth0
        endpoints.check_auth0_domain(channel.auth0.domain, rt.config.endpoints)
        endpoints.check_sms_base_url(channel.sms.base_url, rt.config.endpoints)
    except SpecError:
        channel = None  # an invalid spec never reached Auth0
    if channel is not None:
        async with rt.guard(uid).lock:  # waits for a reconcile in flight to stop
            await _clean_up(rt, channel, body, retry)
        if not cleanup.credentials_users(channels_needing_credentials, namespace,
                                         channel.auth0.credentials_secret) - {name}:
            await cleanup.release_credentials(rt, namespace, channel.auth0.credentials_secret)
        await secret_watch.release(rt, namespace, name, channel.referenced_secrets(), channels_by_secret)
        # Another channel may have been refused with Auth0Conflict because this one owned the point.
        for other_namespace, other_name in channels_by_tenant.get(channel.auth0.domain, ()):
            if (other_namespace, other_name) != (namespace, name):
                rt.wakeups.kick(other_namespace, other_name)
    rt.guards.pop(uid, None)
    rt.forget(namespace, name)


async def _clean_up(rt: Runtime, channel: Any, body: kopf.Body, retry: int) -> None:
    recorded = (body.get("status") or {}).get("auth0")
    decision = cleanup.decide(channel, (body.get("metadata") or {}).get("annotations") or {}, recorded)
    if isinstance(decision, cleanup.Leave):
        (kopf.warn if decision.warning else kopf.info)(dict(body), reason=decision.reason, message=decision.message)
        return
    delay = jittered(min(DELETION_RETRY_MAX, 2.0 ** min(retry + 1, 5)))
    secret = await rt.kube.get("v1", "Secret", channel.namespace, channel.auth0.credentials_secret)
    try:
        credentials = credentials_for(channel, secret)
    except SecretProblem as problem:
        credentials = rt.memory(channel.namespace, channel.name).auth0.last_credentials
        if credentials is None:
            if not recorded:
                return  # never registered, and nothing to remove it with
            await _deletion_blocked(rt, body, problem.reason,
                                    f"{DELETION_BLOCKED}: {problem.message}; restore it, or set the "
                                    f"annotation {names.ANNOTATION_ABANDON_CLEANUP}=true to delete without it")
            raise kopf.TemporaryError(problem.message, delay=delay) from problem
    removed: list[str] = []
    try:
        for integration, auth0_name in decision.targets:
            matches = (recorded or {}).get("integration") == integration and (recorded or {}).get("name") == auth0_name
            removed += await rt.auth0.remove(credentials, owner=channel.owner, integration=integration,
                                             name=auth0_name, recorded=recorded if matches else None)
        if cleanup.has_log_stream(channel, (body.get("status") or {}).get("conditions")):
            tokens = LOG_STREAM.current(await rt.kube.get(
                "v1", "Secret", channel.namespace, names.log_stream_token_secret_name(channel.name)))[0]
            removed += await rt.auth0.remove_log_stream(credentials, desired_log_stream(channel, tuple(tokens)))
    except Auth0Error as error:
        metrics.AUTH0_CALLS.labels("remove", error.reason).inc()
        await _deletion_blocked(rt, body, error.reason,
                                f"{DELETION_BLOCKED} yet, deletion waits: {error.message} (to give up, "
                                f"set the annotation {names.ANNOTATION_ABANDON_CLEANUP}=true)")
        raise kopf.TemporaryError(error.message, delay=max(delay, error.retry_after or 0.0)) from error
    metrics.AUTH0_CALLS.labels("remove", "ok").inc()
    if removed:
        kopf.info(dict(body), reason="Auth0Removed", message=f"removed from Auth0: {', '.join(removed)}")


async def _deletion_blocked(rt: Runtime, body: Mapping[str, Any], reason: str, message: str) -> None:
    """Status when the blocking reason or message changes; a Warning only when the reason changes
    (not per retry)."""
    previous = (body.get("status") or {}).get("conditions") or []
    before = status.find(previous, status.AUTH0_SYNCED) or {}
    if (before.get("reason"), before.get("message")) != (reason, message):
        await report_deletion_blocked(rt, body, reason, message)
    already_blocked = str(before.get("message") or "").startswith(DELETION_BLOCKED)
    if before.get("reason") != reason or not already_blocked:
        kopf.warn(dict(body), reason=reason, message=message)
