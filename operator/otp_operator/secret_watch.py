"""Which Secrets the operator sees: only those carrying its label (``names.LABEL_SECRET``).

kopf lists and watches Secrets with a server-side label selector (``names.SECRET_WATCH_SELECTOR``),
so the API server never sends the operator the cluster's other Secrets. The relay Secrets the
operator creates carry the label from the start. A Secret a channel reads (8x8 key, Auth0
credentials) is read by name (GET) and labelled the first time; from then on its changes arrive
through the watch. The label goes when no channel references the Secret any more: when its last
channel is deleted or stops naming it, or (after a restart) when the watch lists it with no reader.

A Secret that does not exist yet cannot be labelled, so it is not watched: the channel looks for it
again by GET, 1 s after it was found missing, then backing off to every ``MISSING_RECHECK`` seconds
during the grace (``--secret-grace``) and every ``STALLED_RECHECK`` seconds after it.
Removing the label by hand (or a tool rewriting the Secret's labels) looks like a deletion on the
watch: the channels reading it GET it again and put the label back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import names
from .kube import KubeError
from .secrets import watched
from .spec import SpecError, parse_channel

if TYPE_CHECKING:  # only for the annotations: runtime does not import this module
    from .runtime import Runtime

__all__ = ["MISSING_RECHECK", "STALLED_RECHECK", "read_referenced", "recheck_missing", "referenced", "release",
           "unlabel", "watched"]

log = logging.getLogger(__name__)

MISSING_RECHECK = 10.0  # seconds between GETs of a missing Secret during the grace, at most
STALLED_RECHECK = 30.0  # ... and after it (the channel is Stalled until someone creates it)
_LABEL_PATH = "/metadata/labels/" + names.LABEL_SECRET.replace("~", "~0").replace("/", "~1")


def referenced(namespace: str, name: str, spec: Mapping[str, Any]) -> frozenset[str]:
    """The Secrets a channel's operator reads (none for an invalid spec, which never reads any)."""
    try:
        return parse_channel(namespace, name, spec).referenced_secrets()
    except SpecError:
        return frozenset()


def recheck_missing(missing_for: float, grace: float) -> float:
    """Seconds until a missing Secret is looked for again (by GET): doubling from 1 s up to
    MISSING_RECHECK, and exactly when the grace ends; STALLED_RECHECK after it."""
    if missing_for >= grace:
        return STALLED_RECHECK
    return min(max(1.0, missing_for), MISSING_RECHECK, grace - missing_for + 0.5)


async def read_referenced(rt: Runtime, namespace: str, name: str,
                          finalizer: str | None = None) -> dict[str, Any] | None:
    """A referenced Secret (None when missing), labelled so that its changes arrive by the watch;
    ``finalizer``: put on in the same request as the label (unless the Secret changed since the
    read: then only the label, and the finalizer is left to its own request)."""
    secret = await rt.read("v1", "Secret", namespace, name)
    if secret is None or watched(secret):
        return secret
    marker = rt.cache.marker("Secret", namespace, name)
    meta = secret.get("metadata") or {}
    label = {"labels": {names.LABEL_SECRET: names.SECRET_REFERENCED}}
    finalizers = list(meta.get("finalizers") or [])
    labelled = None
    if finalizer and finalizer not in finalizers:
        try:  # resourceVersion: refused (409) if the finalizers changed since the read
            labelled = await rt.kube.patch("v1", "Secret", namespace, name, {"metadata": {
                **label, "finalizers": [*finalizers, finalizer], "resourceVersion": meta.get("resourceVersion")}})
        except KubeError as error:
            log.debug("Secret %s/%s changed since read, labelling it alone: %s", namespace, name, error)
    if labelled is None:
        labelled = await rt.kube.patch("v1", "Secret", namespace, name, {"metadata": label})
    if labelled is None:  # deleted since the read
        return None
    rt.cache.stored("Secret", namespace, name, labelled, marker)
    return labelled


async def unlabel(rt: Runtime, namespace: str, name: str) -> None:
    """Take the referenced label off (only that value: never a relay Secret's)."""
    patch = [{"op": "test", "path": _LABEL_PATH, "value": names.SECRET_REFERENCED},
             {"op": "remove", "path": _LABEL_PATH}]
    try:
        await rt.kube.patch("v1", "Secret", namespace, name, patch, content_type="application/json-patch+json")
    except KubeError as error:  # 422: not (or no longer) labelled referenced; a conflict: the next event retries
        log.debug("label of Secret %s/%s left as it is: %s", namespace, name, error)
    rt.cache.drop("Secret", namespace, name)


async def release(rt: Runtime, namespace: str, channel: str, secrets: frozenset[str],
                  readers: Mapping[Any, Any]) -> None:
    """Unlabel those of ``secrets`` (no longer read by ``channel``) that no other channel reads;
    ``readers`` is the channels_by_secret index."""
    for secret in sorted(secrets):
        if not set(readers.get((namespace, secret), ())) - {channel}:
            await unlabel(rt, namespace, secret)
