"""The operator on the real control plane (full profile) with the Auth0 and 8x8 emulators."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client
from otp_operator import names

from tests.fixtures.relay import free_port
from tests.support.channels import (
    condition,
    create_channel,
    delete_channel,
    get_channel,
    owned_actions,
    patch_channel,
    signing_keys,
    wait_condition,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.cluster



def _deployment(api: client.ApiClient, namespace: str, channel: str) -> dict:
    apps = client.AppsV1Api(api)
    return api.sanitize_for_serialization(apps.read_namespaced_deployment(names.relay_name(channel), namespace))


def _provider_action(state: dict) -> tuple[dict, dict]:
    (action,) = owned_actions(state)
    (provider,) = state["phone_providers"]
    return action, provider


def test_apply_to_ready_and_an_otp_reaches_8x8(k8s_api, namespace, run_operator, setup_channel, sms_emulator,
                                               relay_from_deployment):
    liveness_port, metrics_port = free_port(), free_port()
    # At DEBUG, so the leak scan below covers everything kopf and the operator can log.
    operator = run_operator("--liveness", f"http://127.0.0.1:{liveness_port}/healthz",
                            "--metrics-port", str(metrics_port), "--log-level", "DEBUG")
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))

    channel = wait_condition(k8s_api, namespace, "prod", timeout=90)
    status = channel["status"]
    assert condition(channel, "RelayAvailable")["status"] == "True"
    assert condition(channel, "Auth0Synced")["status"] == "True"
    assert not condition(channel, "Reconciling") and not condition(channel, "Stalled")
    assert status["observedGeneration"] == channel["metadata"]["generation"]
    assert status["relay"]["url"] == ch.public_url
    assert status["auth0"]["integration"] == "phone-provider" and status["auth0"]["actionId"]

    # Children: all owned by the channel, the Deployment Available on the kwok node.
    deployment = _deployment(k8s_api, namespace, "prod")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == channel["metadata"]["uid"]
    assert deployment["status"]["availableReplicas"] == 2
    pdb = client.PolicyV1Api(k8s_api).read_namespaced_pod_disruption_budget("prod-relay", namespace)
    assert pdb.metadata.owner_references[0].name == "prod"
    assert len(signing_keys(k8s_api, namespace, "prod")) == 1

    # Auth0: the action deployed with the relay's secrets, the tenant's provider custom and on.
    action, provider = _provider_action(ch.tenant.state())
    assert action["id"] == status["auth0"]["actionId"]
    assert action["deployed_version"] is not None and action["all_changes_deployed"]
    assert action["secrets"] == ["RELAY_SIGNING_KEY", "RELAY_URL"]
    assert provider["name"] == "custom" and provider["disabled"] is False

    # An OTP fired the way Auth0 would reaches the 8x8 emulator through the relay.
    relay = relay_from_deployment(namespace, "prod-relay", ch.public_url)
    sms_emulator.clear()
    result = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 246810", code="246810")
    assert result.outcome == "success", result
    sent = [m for m in sms_emulator.messages() if m.subaccount == ch.subaccount]
    assert [(m.destination, m.text, m.source) for m in sent] == [("6591234567", "Your code is 246810", "ShopOTP")]

    wait_for_event(k8s_api, namespace, "prod", "Created")
    events = wait_for_event(k8s_api, namespace, "prod", "Auth0Created")
    (created,) = [e.message for e in events if e.reason == "Created"]  # one Event for all children
    assert f"Deployment {namespace}/prod-relay" in created and f"Service {namespace}/prod-relay" in created

    # Liveness and Prometheus metrics.
    assert httpx.get(f"http://127.0.0.1:{liveness_port}/healthz", timeout=5).status_code == 200
    exposed = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'otp_operator_reconciles_total{result="ok"}' in exposed
    assert 'otp_operator_auth0_calls_total{operation="ensure",outcome="ok"}' in exposed
    assert "otp_operator_time_to_ready_seconds_count 1.0" in exposed
    signing = signing_keys(k8s_api, namespace, "prod")
    assert "DEBUG" in operator.logs() and "secret_changed" in operator.logs()  # the scan saw debug output
    operator.assert_no_secrets_logged([*ch.secret_values, *signing])
    # The relay is what saw the OTP: its log line for the send names the number by its last four
    # digits only, and neither its log nor the operator's holds the code or the full number.
    assert '"recipient":"***4567"' in relay.logs().replace(" ", "")
    for log in (relay.logs(), operator.logs()):
        assert "246810" not in log and "6591234567" not in log


def _drift_checks(tenant) -> int:
    """Each check of a phone-provider channel lists the tenant's phone providers once."""
    return len([r for r in tenant.requests() if r.method == "GET" and r.path == "/api/v2/branding/phone/providers"])


def test_steady_state_writes_nothing_and_a_spec_change_propagates(k8s_api, namespace, run_operator,
                                                                  setup_channel, sms_emulator,
                                                                  relay_from_deployment):
    run_operator("--drift-interval", "2")
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)

    # Several drift checks later: reads only.
    ch.tenant.clear_requests()
    wait_for(lambda: _drift_checks(ch.tenant) >= 3, timeout=30, what="three drift checks reading Auth0")
    assert ch.tenant.writes() == []

    # Spec change: the relay gets the new policy; the Auth0 side the new URL.
    new_url = ch.public_url.replace("/prod", "/prod2")
    patch_channel(k8s_api, namespace, "prod", {"spec": {"policy": {"allowedCountries": ["SG"]},
                                                        "relay": {"publicUrl": new_url}}})
    channel = wait_condition(k8s_api, namespace, "prod", timeout=60)
    assert channel["status"]["relay"]["url"] == new_url
    env = {e["name"]: e["value"] for e in _deployment(k8s_api, namespace, "prod")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["OTP_RELAY_ALLOWED_COUNTRIES"] == "SG" and env["OTP_RELAY_PATH_PREFIX"] == "/prod2"
    # Auth0 now calls the new URL: a relay serving only there delivers the OTP.
    relay_from_deployment(namespace, "prod-relay", new_url)
    result = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 135790", code="135790")
    assert result.outcome == "success", result
    assert [m.text for m in sms_emulator.messages() if m.subaccount == ch.subaccount] == ["Your code is 135790"]


def test_8x8_key_rotation_rolls_the_relay_and_leaves_auth0_alone(k8s_api, namespace, run_operator, setup_channel,
                                                                 sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    before = _deployment(k8s_api, namespace, "prod")["spec"]["template"]["metadata"]["annotations"]
    ch.tenant.clear_requests()

    from tests.support.channels import make_secret
    make_secret(k8s_api, namespace, "eightbyeight", {"apikey": "rotated-" + ch.api_key})

    def rolled() -> bool:
        annotations = _deployment(k8s_api, namespace, "prod")["spec"]["template"]["metadata"]["annotations"]
        return annotations[names.ANNOTATION_SECRETS_CHECKSUM] != before[names.ANNOTATION_SECRETS_CHECKSUM]

    wait_for(rolled, timeout=30, what="the relay pod template checksum to change")
    new_checksum = _deployment(k8s_api, namespace, "prod")["spec"]["template"]["metadata"]["annotations"][
        names.ANNOTATION_SECRETS_CHECKSUM]

    def ready_on_the_new_key() -> bool:
        # The pass that saw the relay rolled out with the new key also decided about Auth0
        # (it reports both in one status write): a stale Ready from before does not count.
        channel = get_channel(k8s_api, namespace, "prod") or {}
        return (channel.get("status", {}).get("relay", {}).get("secretsChecksum") == new_checksum
                and condition(channel, "RelayAvailable").get("reason") == "Available"
                and condition(channel, "Ready").get("status") == "True")

    wait_for(ready_on_the_new_key, timeout=60, what="Ready with the relay on the new 8x8 key")
    # Not even a read: the 8x8 key is no input of the Auth0 side (a token request may refresh).
    assert [(r.method, r.path) for r in ch.tenant.requests() if r.path != "/oauth/token"] == []


def test_missing_secret_reports_and_recovers(k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator("--secret-grace", "8")
    ch = setup_channel(namespace)
    client.CoreV1Api(k8s_api).delete_namespaced_secret("eightbyeight", namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    # GitOps may create the Secret seconds after the channel: first awaited (Reconciling) ...
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason="WaitingForSecret", timeout=60)
    assert "eightbyeight" in condition(channel, "Ready")["message"]
    assert condition(channel, "Reconciling")["status"] == "True" and not condition(channel, "Stalled")
    # ... then, after the grace, Stalled (no event kicks the channel: the operator looks again itself).
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason="SecretNotFound", timeout=60)
    assert "eightbyeight" in condition(channel, "Ready")["message"]
    assert condition(channel, "Stalled")["status"] == "True" and not condition(channel, "Reconciling")

    from tests.support.channels import make_secret
    make_secret(k8s_api, namespace, "eightbyeight", {"wrong": "x"})
    # Not watched while missing: found by the next look (secret_watch.STALLED_RECHECK, 30 s) at the latest.
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason="SecretKeyMissing", timeout=60)
    assert "'apikey'" in condition(channel, "Ready")["message"]

    make_secret(k8s_api, namespace, "eightbyeight", {"apikey": ch.api_key})
    wait_condition(k8s_api, namespace, "prod", timeout=60)


def test_delete_cleans_auth0_and_children(k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    state = ch.tenant.state()
    assert state["actions"] == [] and state["phone_providers"] == []
    assert all(not chain for chain in state["bindings"].values())
    apps = client.AppsV1Api(k8s_api)
    wait_for(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=60,
             what="garbage collection of the relay Deployment")


def test_hand_edits_of_children_are_repaired(k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    apps, core = client.AppsV1Api(k8s_api), client.CoreV1Api(k8s_api)
    apps.patch_namespaced_deployment("prod-relay", namespace, {"spec": {"replicas": 5}})
    core.delete_namespaced_service("prod-relay", namespace)
    wait_for(lambda: _deployment(k8s_api, namespace, "prod")["spec"]["replicas"] == 2, timeout=60,
             what="replicas restored")
    wait_for(lambda: core.list_namespaced_service(namespace).items, timeout=60, what="the Service re-created")
    wait_for_event(k8s_api, namespace, "prod", "Repaired")


def test_delete_waits_while_auth0_is_unreachable(k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    ch.tenant.fail_next(503, count=10_000)
    delete_channel(k8s_api, namespace, "prod")
    channel = wait_condition(k8s_api, namespace, "prod", "Auth0Synced", "False", reason="Auth0Unavailable",
                             timeout=90)
    assert "deletion waits" in condition(channel, "Auth0Synced")["message"]
    assert channel["metadata"].get("deletionTimestamp")
    assert len(owned_actions(ch.tenant.state())) == 1
    ch.tenant.fail_next(503, count=0)
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=90, what="the channel to go")
    assert ch.tenant.state()["actions"] == []
