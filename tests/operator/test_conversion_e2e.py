"""Conversion end to end on the real control plane: a channel with ``spec.conversion`` gets its
Auth0 log stream; the relay started from the Deployment sends with ``track: "Outcome"``; the
Auth0 emulator's log stream delivers the tenant's log events to the relay's sink; a code the
user enters is reported ``success`` to 8x8, one never entered ``failure``; deleting the channel
deletes the stream."""

from __future__ import annotations

import pytest

from tests.support.channels import create_channel, delete_channel, get_channel, wait_condition, wait_for

pytestmark = pytest.mark.cluster

FAILURE_AFTER = 4  # seconds (spec.conversion.failureAfter; production keeps the 10m default)


def test_a_used_code_is_reported_success_and_an_unused_one_failure_and_the_stream_goes_with_the_channel(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, relay_from_deployment) -> None:
    operator = run_operator()
    ch = setup_channel(namespace)
    ch.tenant.set_log_stream_time_factor(0.05)  # Auth0 batches for a second: 50 ms here
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url, replicas=1,
                                        conversion={"failureAfter": f"{FAILURE_AFTER}s"}))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    wait_condition(k8s_api, namespace, "prod", "ConversionTracking", "True", reason="LogStreamActive", timeout=90)
    relay = relay_from_deployment(namespace, "prod-relay", ch.public_url).relay
    sms_emulator.clear()

    used = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 246810", code="246810")
    unused = ch.tenant.fire_phone_message(recipient="+6598765432", text="Your code is 135790", code="135790")
    assert (used.outcome, unused.outcome) == ("success", "success"), (used, unused)
    sent = {"+" + m.destination.lstrip("+"): m for m in sms_emulator.messages() if m.subaccount == ch.subaccount}
    assert {m.track for m in sent.values()} == {"Outcome"}, "every SMS asks 8x8 to track its outcome"
    ch.tenant.use_code(used)  # the tenant logs gd_auth_succeed; its log stream posts it to the relay

    def reported() -> dict[str, str] | None:
        outcomes = {"+" + f.destination.lstrip("+"): f.outcome for f in sms_emulator.feedback()}
        return outcomes if len(outcomes) == 2 else None

    outcomes = wait_for(reported, timeout=FAILURE_AFTER + 30, what="8x8 feedback for both messages")
    assert outcomes == {"+6591234567": "success", "+6598765432": "failure"}
    feedback = sms_emulator.feedback()
    assert len(feedback) == 2, "each message is reported once"
    assert all(f.umid == sent["+" + f.destination.lstrip("+")].umid for f in feedback)
    assert all(f.after_seconds < 15 * 60 for f in feedback), "within 8x8's 15 minutes"
    summary = relay.get("/v1/delivery-summary").json()["conversion"]
    assert (summary["success"], summary["failure"]) == (1, 1)
    assert summary["log_stream"]["events"] >= 1

    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    assert ch.tenant.state()["log_streams"] == []
    operator.assert_no_secrets_logged(ch.secret_values)
    logs = relay.logs()
    assert "246810" not in logs and "91234567" not in logs and "98765432" not in logs, "no code, no full number"
