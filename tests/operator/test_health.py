"""Health as GitOps tools read it (kstatus: Reconciling -> InProgress, Stalled -> Failed, neither ->
Current): the pure verdicts for a missing Secret, a rollout, a stuck rollout, zero replicas, errors."""

from __future__ import annotations

from typing import Any

from otp_operator import status

SYNCED = status.true("Synced", "phone-provider synced")


def kstatus(conds: list[dict[str, Any]]) -> str:
    """kstatus' generic rule for custom resources whose observedGeneration is current."""
    by_type = {c["type"]: c for c in conds}
    if (by_type.get(status.STALLED) or {}).get("status") == "True":
        return "Failed"
    if (by_type.get(status.RECONCILING) or {}).get("status") == "True":
        return "InProgress"
    return "Current"


def deployment(replicas: int = 2, conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"conditions": conditions or []}}


def verdicts(relay: status.Verdict, auth0: status.Verdict = SYNCED) -> tuple[dict[str, dict[str, Any]], str]:
    conds = status.conditions(None, 1, relay, auth0, "T")
    return {c["type"]: c for c in conds}, kstatus(conds)


def test_missing_secret_is_in_progress_during_the_grace_then_stalled() -> None:
    message = "Secret 'eightbyeight' not found in namespace shop (8x8 API key)"
    waiting = status.secret_verdict("SecretNotFound", message, missing_for=10.0, grace=300.0)
    conds, health = verdicts(waiting, status.false(status.WAITING_FOR_RELAY, "w"))
    assert health == "InProgress"
    assert conds[status.READY]["reason"] == status.WAITING_FOR_SECRET
    assert message in conds[status.RECONCILING]["message"] and "290s" in conds[status.RECONCILING]["message"]

    late = status.secret_verdict("SecretNotFound", message, missing_for=300.0, grace=300.0)
    conds, health = verdicts(late, status.false(status.WAITING_FOR_RELAY, "w"))
    assert health == "Failed"
    assert conds[status.STALLED]["reason"] == "SecretNotFound" and conds[status.STALLED]["message"] == message


def test_a_present_secret_without_the_key_is_stalled_at_once() -> None:
    verdict = status.secret_verdict("SecretKeyMissing", "no key 'api-key'", missing_for=0.0, grace=300.0)
    assert verdicts(verdict)[1] == "Failed"


def test_rollout_while_replicas_serve_keeps_ready_and_reconciles() -> None:
    relay = status.relay_verdict(deployment(), False, 1, "relay rollout in progress: 1/2 replicas updated")
    conds, health = verdicts(relay)
    assert conds[status.READY]["status"] == "True"
    assert conds[status.RECONCILING]["reason"] == status.ROLLING_OUT
    assert health == "InProgress"
    done = status.relay_verdict(deployment(), True, 2, "2/2 relay replicas available")
    conds, health = verdicts(done)
    assert conds[status.READY]["status"] == "True" and status.RECONCILING not in conds and health == "Current"


def test_rollout_without_any_serving_replica_is_not_ready() -> None:
    relay = status.relay_verdict(deployment(), False, 0, "waiting for relay replicas: 0/2 available")
    conds, health = verdicts(relay)
    assert conds[status.READY]["status"] == "False" and health == "InProgress"


def test_progress_deadline_exceeded_is_stalled() -> None:
    stuck = deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                    "message": "ReplicaSet has timed out progressing."}])
    relay = status.relay_verdict(stuck, False, 1, "relay rollout in progress: 1/2 replicas updated")
    conds, health = verdicts(relay)
    assert health == "Failed"
    assert conds[status.STALLED]["reason"] == status.ROLLOUT_STUCK and "timed out" in conds[status.STALLED]["message"]


def test_zero_replicas_is_a_stable_current_state() -> None:
    relay = status.relay_verdict(deployment(replicas=0), False, 0, "relay scaled to 0 replicas")
    for auth0 in (SYNCED, status.false(status.WAITING_FOR_RELAY, "waiting for the relay")):
        conds, health = verdicts(relay, auth0)
        assert health == "Current"
        assert conds[status.READY]["status"] == "True" and conds[status.READY]["reason"] == status.SCALED_TO_ZERO
    conds, health = verdicts(relay, status.false("Auth0Unauthorized", "bad credentials"))
    assert health == "Failed", "zero replicas does not hide a problem that needs a human"


def test_an_unexpected_error_never_leaves_ready_true() -> None:
    previous = status.conditions(None, 3, status.true("Available", "2/2"), SYNCED, "T1")
    error = status.unknown(status.RECONCILE_ERROR, "reconcile failed (RuntimeError)")
    conds = {c["type"]: c for c in status.conditions(previous, 3, status.KEPT, status.KEPT, "T2", status.KEPT,
                                                     status.KEPT, ready=error)}
    assert conds[status.READY]["status"] == "Unknown" and conds[status.READY]["reason"] == status.RECONCILE_ERROR
    assert conds[status.READY]["lastTransitionTime"] == "T2"
    assert conds[status.RECONCILING]["status"] == "True"
    assert conds[status.RELAY_AVAILABLE]["status"] == "True", "what was observed before is kept"
    assert kstatus(list(conds.values())) == "InProgress"
