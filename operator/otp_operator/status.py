"""Pure status decisions: conditions (kstatus-compatible) from what a reconcile observed.

kstatus reads ``status.observedGeneration`` and the abnormal-true conditions ``Reconciling``
(work in progress, expected to finish) and ``Stalled`` (needs a human); both are present only
while true. ``Ready`` is the summary users and printer columns read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .secrets import SECRET_KEY_MISSING, SECRET_NOT_ALLOWED, SECRET_NOT_FOUND

READY = "Ready"
RELAY_AVAILABLE = "RelayAvailable"
AUTH0_SYNCED = "Auth0Synced"
# True only when the tenant's settings send MFA SMS to the registered code.
PHONE_ROUTING = "PhoneRouting"
# The live canary (spec.canary): did Auth0's test message reach the test phone? Never part of Ready.
DELIVERING = "Delivering"
# spec.conversion: is Auth0's log stream feeding the relay? Never part of Ready; absent without it.
CONVERSION_TRACKING = "ConversionTracking"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# Reasons that will not resolve without someone changing something (spec, Secret, Auth0 app).
STALLED_REASONS = frozenset(
    {
        "InvalidSpec",
        "DisallowedEndpoint",
        SECRET_NOT_FOUND,
        SECRET_KEY_MISSING,
        SECRET_NOT_ALLOWED,
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
        # The tenant lacks Auth0's legacy phone flag: Auth0 Support or integration phone-provider.
        "LegacyPhoneProviderNotAllowed",
        # A passwordless sms connection that does not (or may not) send through the channel.
        "PasswordlessNotRouted",
        "PasswordlessRoutingUnknown",
        "RelayRolloutStuck",
    }
)
# Relay states (see relay_verdict). Rolling out while old or new replicas serve keeps Ready and
# adds Reconciling. Scaled to zero is a stated, stable state: Ready True with reason ScaledToZero,
# neither Reconciling nor Stalled, so kstatus reads Current and Argo CD Healthy.
ROLLING_OUT = "RollingOut"
SCALED_TO_ZERO = "ScaledToZero"
ROLLOUT_STUCK = "RelayRolloutStuck"
# A referenced Secret that does not exist yet (GitOps: External Secrets or SOPS may land it
# seconds later): Reconciling during the grace period, SecretNotFound (Stalled) after it.
WAITING_FOR_SECRET = "WaitingForSecret"
RECONCILE_ERROR = "ReconcileError"
WAITING_FOR_RELAY = "WaitingForRelay"


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
    if relay.reason == SCALED_TO_ZERO and (auth0.ok or auth0.reason == WAITING_FOR_RELAY):
        return true(SCALED_TO_ZERO, relay.message)  # nothing to register in Auth0 until it serves
    if relay.ok and auth0.ok and (routing is None or routing.ok):
        return true("Ready", f"{relay.message}; {auth0.message}")
    failing = next(v for v in (relay, auth0, routing) if v is not None and not v.ok)
    return false(failing.reason, failing.message)


def relay_verdict(deployment: Mapping[str, Any] | None, rolled_out: bool, available: int, message: str) -> Verdict:
    """RelayAvailable from the live Deployment and render.relay_rollout's reading of it."""
    if rolled_out:
        return true("Available", message)
    spec = (deployment or {}).get("spec") or {}
    if deployment is not None and int(spec.get("replicas", 1)) == 0:
        return true(SCALED_TO_ZERO, "relay scaled to 0 replicas (spec.relay.replicas is 0): it serves no OTPs")
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or ():
        if (condition.get("type") == "Progressing" and condition.get("status") == "False"
                and condition.get("reason") == "ProgressDeadlineExceeded"):
            return false(ROLLOUT_STUCK, f"relay rollout stuck (ProgressDeadlineExceeded): {condition.get('message', '')}")
    if available >= 1:
        return true(ROLLING_OUT, f"{message}; {available} replica(s) serving meanwhile")
    return false("Progressing", message)


def secret_verdict(reason: str, message: str, missing_for: float, grace: float) -> Verdict:
    """A missing Secret is awaited for `grace` seconds before it counts as needing a human."""
    if reason == SECRET_NOT_FOUND and missing_for < grace:
        return false(WAITING_FOR_SECRET, f"{message}; waiting up to {max(1, round(grace - missing_for))}s more "
                                         "for it to be created before reporting SecretNotFound")
    return false(reason, message)


# How long after the try the relay must have recorded the canary's send (Auth0 runs the action
# within seconds; its own retries come within minutes).
CANARY_RELAY_BOUND = 5 * 60
CANARY_SKEW = 60  # seconds the relay's clock may be behind the operator's


def _code(error_code: str, reason: str) -> str:
    return f"code {error_code}" + (f" ({reason})" if reason else "") if error_code else (reason or "no code")


def canary_through_auth0(integration: str) -> bool:
    """Auth0 has a test endpoint only for phone providers; in the legacy modes the operator
    sends the canary to the relay itself."""
    return integration == "phone-provider"


def delivering_verdict(canary: Mapping[str, Any] | None, integration: str, masked: str,
                       configured: bool) -> Verdict | None:
    """The Delivering condition from ``status.canary`` (what the delivery timer recorded); None
    without spec.canary (no condition at all). ``masked``: the test number as shown."""
    if not configured:
        return None
    via_auth0 = canary_through_auth0(integration)
    path = "" if via_auth0 else (f" (sent by the operator to the relay: Auth0 has no test endpoint for "
                                 f"{integration}, so Auth0's part of the path is not covered)")
    canary = canary or {}
    tried = canary.get("lastTryTime")
    if not tried:
        return unknown("CanaryPending", f"waiting for the first canary to {masked} (sent once the channel is Ready)")
    result = canary.get("result") or {}
    state = result.get("state")
    if state == "delivered":
        seconds = result.get("deliverySeconds")
        took = f", delivered in {float(seconds):.1f} s" if seconds is not None else ", delivered"
        return true("CanaryDelivered", f"last canary to {masked} sent {result.get('sentAt', tried)}{took}{path}")
    if state == "undelivered":
        return false("CanaryUndelivered", f"8x8 could not deliver the canary to {masked} sent "
                     f"{result.get('sentAt', tried)}: {_code(result.get('errorCode', ''), result.get('reason', ''))}")
    if state == "rejected":
        return false("Canary8x8Rejected", f"the relay's send of the canary to {masked} at {result.get('sentAt', tried)} "
                     f"failed: {_code(result.get('errorCode', ''), result.get('reason', ''))}")
    if state == "sent":
        return unknown("CanaryAwaitingReceipt", f"8x8 accepted the canary to {masked} at {result.get('sentAt')}; "
                       "waiting for its delivery receipt")
    error = canary.get("tryError")
    if error and via_auth0:
        return false("CanaryAuth0Refused", f"Auth0 refused the canary's test message at {tried} "
                     f"(POST /api/v2/branding/phone/providers/{{id}}/try answered {error}): check the phone "
                     "provider and the action bound to custom-phone-provider in the tenant")
    if error:
        return false("CanaryRelayRefused", f"the relay refused the canary the operator sent at {tried} "
                     f"(answered {error}){path}: check the relay's logs and its signing-key Secret")
    if canary.get("relayCalled") is False and via_auth0:
        return false("CanaryRelayNotCalled", f"Auth0 accepted the canary's test message at {tried}, but the relay "
                     f"recorded no canary send within {CANARY_RELAY_BOUND // 60}m: check the tenant's logs for "
                     "the custom-phone-provider action and that the relay's public URL reaches it")
    if canary.get("relayCalled") is False:
        return false("CanaryRelayNotCalled", f"the relay accepted the canary at {tried} but recorded no canary send "
                     f"within {CANARY_RELAY_BOUND // 60}m{path}: check that its pods run with the canary number")
    return unknown("CanaryPending", f"asked at {tried} for the canary to {masked}; waiting for the relay")


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


@dataclass(frozen=True)
class Kept:
    """A condition left exactly as the last pass wrote it (this pass learned nothing about it)."""


KEPT = Kept()
Part = Verdict | Kept | None  # None: the condition is not there


def verdict_of(previous: Sequence[Mapping[str, Any]] | None, type_: str) -> Verdict | None:
    """A condition as the last pass wrote it, as a verdict (None: there was none)."""
    before = find(previous, type_)
    if not before:
        return None
    return Verdict(str(before.get("status")), str(before.get("reason")), str(before.get("message")))


def conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    generation: int,
    relay: Verdict | Kept,
    auth0: Verdict | Kept,
    now: str,
    routing: Part = None,
    delivering: Part = None,
    conversion: Part = None,
    *,
    ready: Verdict | None = None,
    suspended: bool = False,
) -> list[dict[str, Any]]:
    """The conditions every status write carries; previous ones keep their lastTransitionTime.

    Ready is the summary of the parts unless ``ready`` says otherwise (after an unexpected error
    it is Unknown, never a stale True). ``delivering`` (the canary) and ``conversion``
    (ConversionTracking) never change Ready. Reconciling
    or Stalled follow from Ready, except while ``suspended``: nothing is written then, so nothing
    is reconciling (and Ready keeps its status)."""
    before = {c.get("type", ""): c for c in previous or ()}
    if suspended:
        ready_before = before.get(READY) or {}
        ready = Verdict(str(ready_before.get("status") or "Unknown"), "Suspended",
                        "spec.suspend is true: the operator makes no changes")
    elif ready is None:
        if not isinstance(relay, Verdict) or not isinstance(auth0, Verdict) or isinstance(routing, Kept):
            raise ValueError("Ready needs the relay and Auth0 verdicts, or is given")
        ready = ready_verdict(relay, auth0, routing)
    result = [_condition(READY, ready, generation, before, now)]
    for type_, part in ((RELAY_AVAILABLE, relay), (AUTH0_SYNCED, auth0), (PHONE_ROUTING, routing),
                        (DELIVERING, delivering), (CONVERSION_TRACKING, conversion)):
        if isinstance(part, Kept):
            if type_ in before:
                result.append(dict(before[type_]))
        elif part is not None:
            result.append(_condition(type_, part, generation, before, now))
    if suspended:
        return result
    if ready.ok and isinstance(relay, Verdict) and relay.reason == ROLLING_OUT:
        # serving all along: Ready stays, the rollout is work
        result.append(_condition(RECONCILING, true(ROLLING_OUT, relay.message), generation, before, now))
    elif not ready.ok and ready.reason in STALLED_REASONS:
        result.append(_condition(STALLED, true(ready.reason, ready.message), generation, before, now))
    elif not ready.ok:
        result.append(_condition(RECONCILING, true(ready.reason, ready.message), generation, before, now))
    return result


def find(conditions_: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions_ or ():
        if condition.get("type") == type_:
            return condition
    return None
