"""Pure status decisions: conditions (kstatus-compatible) from what a reconcile observed.

kstatus reads ``status.observedGeneration`` and the abnormal-true conditions ``Reconciling``
(work in progress, expected to finish) and ``Stalled`` (needs a human); both are present only
while true. ``Ready`` is the summary users and printer columns read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

READY = "Ready"
RELAY_AVAILABLE = "RelayAvailable"
AUTH0_SYNCED = "Auth0Synced"
# True only when the tenant's settings send MFA SMS to the registered code.
PHONE_ROUTING = "PhoneRouting"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# Reasons that will not resolve without someone changing something (spec, Secret, Auth0 app).
STALLED_REASONS = frozenset(
    {
        "InvalidSpec",
        "DisallowedEndpoint",
        "SecretNotFound",
        "SecretKeyMissing",
        "Auth0Unauthorized",
        "Auth0Forbidden",
        "Auth0Conflict",
        "Auth0Invalid",
        "Auth0BuildFailed",
        # PhoneRouting reasons: a tenant setting someone has to change (or manageRouting).
        "WrongPhoneExperience",
        "GuardianProviderNotHook",
        "SmsFactorDisabled",
        "SmsMessageTypeMissing",
    }
)


@dataclass(frozen=True)
class Verdict:
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


def true(reason: str, message: str) -> Verdict:
    return Verdict("True", reason, message)


def false(reason: str, message: str) -> Verdict:
    return Verdict("False", reason, message)


def unknown(reason: str, message: str) -> Verdict:
    return Verdict("Unknown", reason, message)


def ready_verdict(relay: Verdict, auth0: Verdict, routing: Verdict | None = None) -> Verdict:
    if relay.ok and auth0.ok and (routing is None or routing.ok):
        return true("Ready", f"{relay.message}; {auth0.message}")
    failing = next(v for v in (relay, auth0, routing) if v is not None and not v.ok)
    return false(failing.reason, failing.message)


def _condition(
    type_: str, verdict: Verdict, generation: int, previous: Mapping[str, Mapping[str, Any]], now: str
) -> dict[str, Any]:
    before = previous.get(type_) or {}
    transitioned = before.get("status") != verdict.status
    return {
        "type": type_,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
        "lastTransitionTime": now if transitioned or not before.get("lastTransitionTime") else before["lastTransitionTime"],
    }


def conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    generation: int,
    relay: Verdict,
    auth0: Verdict,
    now: str,
    routing: Verdict | None = None,
) -> list[dict[str, Any]]:
    """All conditions for a finished reconcile; previous ones keep their lastTransitionTime."""
    before = {c.get("type", ""): c for c in previous or ()}
    ready = ready_verdict(relay, auth0, routing)
    result = [
        _condition(READY, ready, generation, before, now),
        _condition(RELAY_AVAILABLE, relay, generation, before, now),
        _condition(AUTH0_SYNCED, auth0, generation, before, now),
    ]
    if routing is not None:
        result.append(_condition(PHONE_ROUTING, routing, generation, before, now))
    if not ready.ok:
        if ready.reason in STALLED_REASONS:
            result.append(_condition(STALLED, true(ready.reason, ready.message), generation, before, now))
        else:
            result.append(_condition(RECONCILING, true(ready.reason, ready.message), generation, before, now))
    return result


def suspended_conditions(
    previous: Sequence[Mapping[str, Any]] | None, generation: int, now: str
) -> list[dict[str, Any]]:
    """While suspended nothing is written, so nothing is reconciling: Ready keeps its status."""
    before = {c.get("type", ""): c for c in previous or ()}
    ready_before = before.get(READY) or {}
    ready = Verdict(str(ready_before.get("status") or "Unknown"), "Suspended",
                    "spec.suspend is true: the operator makes no changes")
    kept = [dict(c) for c in previous or () if c.get("type") in (RELAY_AVAILABLE, AUTH0_SYNCED,
                                                                  PHONE_ROUTING)]
    return [_condition(READY, ready, generation, before, now), *kept]


def find(conditions_: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions_ or ():
        if condition.get("type") == type_:
            return condition
    return None
