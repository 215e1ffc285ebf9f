"""kopf wiring: indices, watches that kick channel loops, the per-channel loop, the finalizer.

Each channel runs one long-lived loop (a kopf daemon) that reconciles whenever it is kicked
(its spec, a referenced Secret or one of its children changed) or its timer expires (drift
check, retry backoff). Watches on children and Secrets only kick; they never reconcile inline.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import endpoints, metrics, names, status
from .auth0 import Auth0Error
from .reconcile import credentials_for, now_iso, reconcile
from .runtime import Runtime
from .secrets import SecretProblem
from .spec import SpecError, parse_channel

CHANNELS = (names.GROUP, names.VERSION, names.PLURAL)
MANAGED = {names.LABEL_MANAGED_BY: names.OPERATOR_NAME}


def _runtime(memo: Any) -> Runtime:
    return memo.runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.ANNOTATION_PREFIX_KOPF)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.ANNOTATION_PREFIX_KOPF, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    settings.posting.reporting_component = names.OPERATOR_NAME
    settings.posting.loggers = False  # Events only from explicit kopf.info/warn, never log lines
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # With listed namespaces the operator holds Roles only: scanning CRDs and namespaces
    # cluster-wide would be refused (and retried) for nothing.
    settings.scanning.disabled = _runtime(memo).config.namespaced
    await _runtime(memo).start()


@kopf.on.cleanup()
async def shutdown(memo: Any, **_: Any) -> None:
    await _runtime(memo).close()


# --- indices ---------------------------------------------------------------------------------

@kopf.index(*CHANNELS)
def channels_by_secret(namespace: str, name: str, spec: Mapping[str, Any], **_: Any) -> dict[Any, str]:
    """(namespace, Secret name) -> channel names that read it."""
    try:
        channel = parse_channel(namespace, name, spec)
    except SpecError:
        return {}
    return {(namespace, secret): name for secret in channel.referenced_secrets()}


@kopf.index(*CHANNELS)
def channels_by_tenant(namespace: str, name: str, spec: Mapping[str, Any], **_: Any) -> dict[Any, tuple[str, str]]:
    """Auth0 domain -> channels on that tenant (to hand over an integration point on delete)."""
    domain = ((spec or {}).get("auth0") or {}).get("domain")
    return {domain: (namespace, name)} if domain else {}


# --- kicks -----------------------------------------------------------------------------------

@kopf.on.event(*CHANNELS)
def channel_changed(type: str, body: Mapping[str, Any], memo: Any, **_: Any) -> None:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    trigger = (meta.get("generation"), annotations.get(names.ANNOTATION_ROTATE_SIGNING_KEY),
               annotations.get(names.ANNOTATION_ROTATE_RECEIPT_TOKEN))
    rt = _runtime(memo)
    mem = rt.memory(meta.get("namespace", ""), meta.get("name", ""))
    if type != "DELETED" and mem.last_trigger != trigger:
        mem.last_trigger = trigger
        rt.wakeups.kick(meta["namespace"], meta["name"])


@kopf.on.event("v1", "secrets")
def secret_changed(type: str, namespace: str, name: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                   channels_by_secret: kopf.Index, **_: Any) -> None:
    rt = _runtime(memo)
    readers = list(channels_by_secret.get((namespace, name), ()))
    if readers:  # only Secrets some channel references are kept, never the rest of the cluster's
        if type == "DELETED":
            rt.cache.gone("Secret", namespace, name)
        else:
            rt.cache.put("Secret", namespace, name, _plain(body))
        for channel in readers:
            rt.wakeups.kick(namespace, channel)
    else:
        rt.cache.drop("Secret", namespace, name)
    if labels.get(names.LABEL_MANAGED_BY) == names.OPERATOR_NAME and names.LABEL_CHANNEL in labels:
        _child_changed("Secret", type, namespace, labels, body, memo)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def _child_changed(kind: str, type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body,
                   memo: Any) -> None:
    channel = labels.get(names.LABEL_CHANNEL)
    if channel:
        rt = _runtime(memo)
        rt.observe_child(kind, namespace, channel, _plain(body), deleted=type == "DELETED")
        rt.wakeups.kick(namespace, channel)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                       **_: Any) -> None:
    _child_changed("Deployment", type, namespace, labels, body, memo)


@kopf.on.event("v1", "services", labels=MANAGED)
def service_changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                    **_: Any) -> None:
    _child_changed("Service", type, namespace, labels, body, memo)


@kopf.on.event("networking.k8s.io", "v1", "ingresses", labels=MANAGED)
def ingress_changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                    **_: Any) -> None:
    _child_changed("Ingress", type, namespace, labels, body, memo)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
def pdb_changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                **_: Any) -> None:
    _child_changed("PodDisruptionBudget", type, namespace, labels, body, memo)


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
def network_policy_changed(type: str, namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: Any,
                           **_: Any) -> None:
    _child_changed("NetworkPolicy", type, namespace, labels, body, memo)


# --- the channel loop ------------------------------------------------------------------------

@kopf.daemon(*CHANNELS, cancellation_timeout=15.0)
async def channel_loop(namespace: str, name: str, body: kopf.Body, memo: Any, logger: logging.Logger,
                       stopped: kopf.DaemonStopped, **_: Any) -> None:
    rt = _runtime(memo)
    wake = rt.wakeups.register(namespace, name)
    metrics.CHANNELS.inc()
    failures = 0
    try:
        while not stopped:
            wake.clear()
            try:
                async with rt.reconcile_slots:
                    delay = await reconcile(rt, body, logger)
                failures = 0
            except Exception as error:  # an API hiccup must not kill the loop; retry with backoff
                failures += 1
                delay = min(300.0, 2.0 ** min(failures, 8))
                metrics.RECONCILES.labels("error").inc()
                logger.warning("reconcile failed (%s), retrying in %.0fs: %s",
                               type(error).__name__, delay, error)
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

@kopf.on.delete(*CHANNELS)
async def channel_deleted(namespace: str, name: str, body: kopf.Body, memo: Any, logger: logging.Logger,
                          channels_by_tenant: kopf.Index, **_: Any) -> None:
    """Remove the Auth0 side first; garbage collection then takes the children."""
    rt = _runtime(memo)
    assert rt.kube is not None
    try:
        channel = parse_channel(namespace, name, body.get("spec") or {})
        endpoints.check_channel(channel, rt.config.endpoints)
    except SpecError:
        rt.forget(namespace, name)
        return  # an invalid spec never reached Auth0, and a disallowed domain gets no credentials
    recorded = (body.get("status") or {}).get("auth0")
    secret = await rt.kube.get("v1", "Secret", namespace, channel.auth0.credentials_secret)
    try:
        credentials = credentials_for(channel, secret)
    except SecretProblem as problem:
        credentials = rt.memory(namespace, name).last_credentials
        if credentials is None:
            if not recorded:
                rt.forget(namespace, name)
                return
            await _deletion_blocked(rt, body, problem.reason,
                                    f"cannot remove the Auth0 side: {problem.message}; restore it to finish deletion")
            raise kopf.TemporaryError(problem.message, delay=30)
    # What status recorded (an older integration or name not yet re-synced) and what the spec says.
    targets = {(channel.auth0.integration, channel.auth0.name)}
    if recorded and recorded.get("integration") and recorded.get("name"):
        targets.add((recorded["integration"], recorded["name"]))
    removed: list[str] = []
    try:
        for integration, auth0_name in sorted(targets):
            removed += await rt.auth0.remove(credentials, owner=channel.owner, integration=integration,
                                             name=auth0_name,
                                             recorded=recorded if (recorded or {}).get("integration") == integration
                                             and recorded.get("name") == auth0_name else None)
    except Auth0Error as error:
        metrics.AUTH0_CALLS.labels("remove", error.reason).inc()
        await _deletion_blocked(rt, body, error.reason,
                                f"cannot remove the Auth0 side yet, deletion waits: {error.message}")
        raise kopf.TemporaryError(error.message, delay=max(10.0, error.retry_after or 0.0))
    metrics.AUTH0_CALLS.labels("remove", "ok").inc()
    if removed:
        kopf.info(dict(body), reason="Auth0Removed", message=f"removed from Auth0: {', '.join(removed)}")
    rt.forget(namespace, name)
    # Another channel may have been refused with Auth0Conflict because this one owned the point.
    for other_namespace, other_name in channels_by_tenant.get(channel.auth0.domain, ()):
        if (other_namespace, other_name) != (namespace, name):
            rt.wakeups.kick(other_namespace, other_name)


async def _deletion_blocked(rt: Runtime, body: Mapping[str, Any], reason: str, message: str) -> None:
    assert rt.kube is not None
    meta = body["metadata"]
    previous = (body.get("status") or {}).get("conditions") or []
    generation = int(meta.get("generation") or 1)
    verdict = status.false(reason, message)
    relay = status.find(previous, status.RELAY_AVAILABLE) or {}
    relay_v = status.Verdict(str(relay.get("status") or "Unknown"), str(relay.get("reason") or "Deleting"),
                             str(relay.get("message") or "channel is being deleted"))
    conds = status.conditions(previous, generation, relay_v, verdict, now_iso())
    await rt.kube.patch_channel_status(meta["namespace"], meta["name"], {"conditions": conds})
    kopf.warn(dict(body), reason=reason, message=message)
