"""Signing-key rotation without a failed OTP, as a pure state machine.

The relay accepts every key in its key file; Auth0 holds exactly one. A rotation walks:

    Stable --(annotation with a new value)--> KeyAdded      secret = [old, new], Auth0 = old
    KeyAdded --(relay rolled out with both keys, and the kubelet had time to refresh mounted
                Secrets: ``propagation`` seconds)--> Auth0Updating   Auth0 = new
    Auth0Updating --(ensure() succeeded)--> Auth0Updated    (grace for in-flight executions)
    Auth0Updated --(grace elapsed)--> Stable               secret = [new]

Every step is re-derivable from the Secret's key list plus ``status.signingKey`` (no key
material in status), so an operator killed at any point resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

STABLE = "Stable"
KEY_ADDED = "KeyAdded"
AUTH0_UPDATING = "Auth0Updating"
AUTH0_UPDATED = "Auth0Updated"


@dataclass(frozen=True)
class SigningState:
    """What status.signingKey records."""

    phase: str = STABLE
    handled_request: str = ""  # the annotation value of the last finished (or running) rotation
    since: float = 0.0  # unix time the phase was entered

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> "SigningState":
        status = status or {}
        return cls(
            phase=str(status.get("phase") or STABLE),
            handled_request=str(status.get("rotationRequest") or ""),
            since=float(status.get("since") or 0.0),
        )

    def as_status(self, key_count: int) -> dict[str, Any]:
        return {"phase": self.phase, "rotationRequest": self.handled_request, "since": self.since, "keys": key_count}


@dataclass(frozen=True)
class SigningPlan:
    keys: tuple[str, ...]  # the signing-key Secret's content, oldest first
    auth0_key: str  # the key Auth0 must hold right now
    state: SigningState
    event: str | None = None  # what changed, for an Event (no key material)


def plan(
    keys: list[str],
    state: SigningState,
    requested: str | None,
    relay_rolled_out: bool,
    now: float,
    grace_seconds: float,
    new_key: Callable[[], str],
    propagation: float = 0.0,
) -> SigningPlan:
    """Decide the key set and Auth0's key for this reconcile.

    ``relay_rolled_out``: every relay pod runs with the current key Secret (its checksum).
    """
    if not keys:
        key = new_key()
        return SigningPlan((key,), key, SigningState(STABLE, requested or "", now), "generated a signing key")

    if len(keys) == 1:
        if requested and requested != state.handled_request:
            added = new_key()
            return SigningPlan(
                (keys[0], added), keys[0], SigningState(KEY_ADDED, requested, now),
                "signing-key rotation: new key added, relay accepts both",
            )
        return SigningPlan((keys[0],), keys[0], SigningState(STABLE, state.handled_request, state.since))

    old, newest = keys[-2], keys[-1]
    current = (old, newest)  # anything older than the previous key is retired on sight
    if state.phase in (STABLE, KEY_ADDED):
        # STABLE with two keys: killed after writing the Secret, before recording the phase.
        request = state.handled_request if state.phase == KEY_ADDED else (requested or state.handled_request)
        since = state.since or now
        if not relay_rolled_out or now - since < propagation:
            return SigningPlan(current, old, SigningState(KEY_ADDED, request, since))
        return SigningPlan(
            current, newest, SigningState(AUTH0_UPDATING, request, now),
            "signing-key rotation: relay accepts both keys, updating Auth0",
        )
    if state.phase == AUTH0_UPDATING:
        return SigningPlan(current, newest, state)
    # AUTH0_UPDATED: keep the old key for in-flight Auth0 executions, then retire it.
    if now - state.since < grace_seconds:
        return SigningPlan(current, newest, state)
    return SigningPlan(
        (newest,), newest, SigningState(STABLE, state.handled_request, now),
        "signing-key rotation finished: old key retired",
    )


def after_auth0_synced(plan_: SigningPlan, now: float) -> SigningState:
    """The state to record once Auth0 holds ``plan_.auth0_key``."""
    if plan_.state.phase == AUTH0_UPDATING:
        return SigningState(AUTH0_UPDATED, plan_.state.handled_request, now)
    return plan_.state


def retry_after(plan_: SigningPlan, now: float, grace_seconds: float, propagation: float = 0.0) -> float | None:
    """Seconds until the rotation can advance by time alone (propagation, grace), else None."""
    if plan_.state.phase == AUTH0_UPDATED:
        return max(0.5, grace_seconds - (now - plan_.state.since))
    if plan_.state.phase == KEY_ADDED and now - plan_.state.since < propagation:
        return max(0.5, propagation - (now - plan_.state.since))
    return None
