"""Deleting a channel: what to do with its Auth0 side (pure), and the in-use finalizer that keeps
the Auth0 credentials Secret until that is done.

A channel's deletion removes what it registered in Auth0 unless the user said otherwise:
``spec.deletionPolicy: Orphan``, ``spec.suspend: true`` (no writes at all, as Flux does for a
suspended object), or the abandon annotation set on a deletion that cannot finish.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .kube import KubeError
from .runtime import Runtime
from .spec import ChannelSpec
from .status import CONVERSION_TRACKING

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leave:
    """Finish the deletion without touching Auth0; ``reason``/``message`` for the Event."""

    reason: str
    message: str
    warning: bool


@dataclass(frozen=True)
class Remove:
    """Remove these (integration, Auth0 name) pairs; ``recorded`` is status.auth0."""

    targets: tuple[tuple[str, str], ...]
    recorded: Mapping[str, Any] | None


def describe_recorded(recorded: Mapping[str, Any] | None) -> str:
    if not recorded:
        return "nothing was recorded as registered"
    ids = [f"{key} {recorded[key]}" for key in ("actionId", "hookId", "providerId") if recorded.get(key)]
    what = f"{recorded.get('integration', '?')} {recorded.get('name', '?')!r}"
    return f"{what} ({', '.join(ids)})" if ids else what


def decide(ch: ChannelSpec, annotations: Mapping[str, str], recorded: Mapping[str, Any] | None) -> Leave | Remove:
    left = describe_recorded(recorded)
    if annotations.get(names.ANNOTATION_ABANDON_CLEANUP, "").lower() in ("true", "yes", "1"):
        return Leave("CleanupAbandoned", f"{names.ANNOTATION_ABANDON_CLEANUP} is set: deleted without "
                     f"removing the Auth0 side, left on {ch.auth0.domain}: {left}", warning=True)
    if ch.suspend:
        return Leave("Auth0Orphaned", f"spec.suspend is true: deleted without touching Auth0, left on "
                     f"{ch.auth0.domain}: {left}", warning=True)
    if ch.deletion_policy == "Orphan":
        return Leave("Auth0Orphaned", f"spec.deletionPolicy is Orphan: left on {ch.auth0.domain}: {left}",
                     warning=False)
    targets = {(ch.auth0.integration, ch.auth0.name)}
    if recorded and recorded.get("integration") and recorded.get("name"):
        targets.add((str(recorded["integration"]), str(recorded["name"])))
    return Remove(tuple(sorted(targets)), recorded)


def has_log_stream(ch: ChannelSpec, conditions: Any) -> bool:
    """Whether the channel may have an Auth0 log stream to delete: spec.conversion is on, or it
    was (the ConversionTracking condition stays until the stream is gone)."""
    return ch.conversion is not None or any(
        (c or {}).get("type") == CONVERSION_TRACKING for c in conditions or ())


def needs_credentials(ch: ChannelSpec) -> bool:
    """Whether deleting this channel would call Auth0 (so its credentials must outlive it)."""
    return ch.deletion_policy == "Delete" and not ch.suspend


def credentials_users(index: Mapping[Any, Any], namespace: str, secret: str) -> set[str]:
    """Channels whose deletion needs this credentials Secret; ``index`` is kopf's
    channels_needing_credentials index."""
    return set(index.get((namespace, secret), ()))


async def protect_credentials(rt: Runtime, secret: Mapping[str, Any]) -> None:
    """Put the in-use finalizer on the credentials Secret (before the first Auth0 write)."""
    await rt.kube.set_finalizer("v1", "Secret", secret, names.FINALIZER_CREDENTIALS_IN_USE, True)


async def release_credentials(rt: Runtime, namespace: str, secret_name: str) -> None:
    """Take the in-use finalizer off (the caller checked that no channel needs the Secret)."""
    secret = await rt.kube.get("v1", "Secret", namespace, secret_name)
    if secret is None:
        return
    try:
        await rt.kube.set_finalizer("v1", "Secret", secret, names.FINALIZER_CREDENTIALS_IN_USE, False)
    except KubeError as error:  # changed meanwhile: its next watch event checks again
        log.info("could not release Secret %s/%s yet: %s", namespace, secret_name, error.message)
