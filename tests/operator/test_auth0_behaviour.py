"""Ownership, errors, rotation and restarts: the operator against the Auth0 emulator."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from otp_operator import names

from tests.fixtures.auth0 import make_client
from tests.fixtures.relay import otp_body
from tests.support.auth0 import Dashboard
from tests.support.channels import (
    OtpTraffic,
    condition,
    create_channel,
    delete_channel,
    get_channel,
    make_secret,
    owned_actions,
    patch_channel,
    rotation_finished,
    signing_keys,
    wait_condition,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.cluster



def test_two_channels_on_one_tenant_conflict_then_hand_over(k8s_api, namespace, second_namespace, run_operator,
                                                            setup_channel, sms_emulator):
    operator = run_operator()
    first = setup_channel(namespace)
    create_channel(k8s_api, first.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    state_before = first.tenant.state()
    first.tenant.clear_requests()

    second = setup_channel(second_namespace, tenant=first.tenant)
    create_channel(k8s_api, second.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, second_namespace, "prod", "Ready", "False", reason="Auth0Conflict",
                             timeout=90)
    assert f"{namespace}/prod" in condition(channel, "Ready")["message"]
    assert condition(channel, "Stalled")["status"] == "True"
    # Refused before any write: not even a draft action or a binding was touched.
    assert first.tenant.writes() == [], [(w.method, w.path) for w in first.tenant.writes()]
    assert any(r.method == "GET" for r in first.tenant.requests()), "the conflict was decided on Auth0's state"
    state = first.tenant.state()
    assert [a["id"] for a in owned_actions(state)] == [a["id"] for a in owned_actions(state_before)]
    assert state["phone_providers"] == state_before["phone_providers"]

    delete_channel(k8s_api, namespace, "prod")
    channel = wait_condition(k8s_api, second_namespace, "prod", timeout=90)
    (action,) = owned_actions(first.tenant.state())
    assert action["name"] == f"otp-relay-{second_namespace}-prod"
    assert action["id"] == channel["status"]["auth0"]["actionId"]
    operator.assert_no_secrets_logged(first.secret_values + second.secret_values)


def test_two_tenants_never_touch_each_other(k8s_api, namespace, second_namespace, run_operator, setup_channel,
                                            sms_emulator):
    run_operator()
    a = setup_channel(namespace)
    b = setup_channel(second_namespace)
    create_channel(k8s_api, a.manifest(sms_emulator.base_url))
    create_channel(k8s_api, b.manifest(sms_emulator.base_url, replicas=1))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    wait_condition(k8s_api, second_namespace, "prod", timeout=90)
    assert [x["name"] for x in owned_actions(a.tenant.state())] == [f"otp-relay-{namespace}-prod"]
    assert [x["name"] for x in owned_actions(b.tenant.state())] == [f"otp-relay-{second_namespace}-prod"]
    b.tenant.clear_requests()
    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="deletion")
    assert owned_actions(a.tenant.state()) == []
    assert b.tenant.writes() == []
    assert len(owned_actions(b.tenant.state())) == 1


@pytest.mark.parametrize("fault, reason", [("bad-secret", "Auth0Unauthorized"), ("no-scopes", "Auth0Forbidden"),
                                           ("rate-limited", "Auth0RateLimited")])
def test_auth0_errors_give_reasons_and_bounded_retries(k8s_api, namespace, run_operator, setup_channel,
                                                       auth0_tenant, sms_emulator, fault, reason):
    if fault == "no-scopes":
        # a second client with every scope: granting them is how the user recovers
        tenant = auth0_tenant(clients=[make_client(scopes=("read:actions",)), make_client()])
    else:
        tenant = auth0_tenant()
    tenant.route_phone_messages_to("phone-provider")
    ch = setup_channel(namespace, tenant=tenant)
    real = tenant.clients[0]
    if fault == "bad-secret":
        make_secret(k8s_api, namespace, "auth0-mgmt", {"client_id": real.client_id, "client_secret": "wrong-secret"})
    if fault == "rate-limited":
        tenant.fail_next(429, count=10_000)
    run_operator()
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason=reason, timeout=90)
    message = condition(channel, "Auth0Synced")["message"]
    assert "wrong-secret" not in message and real.client_secret not in message
    if fault == "no-scopes":
        assert "create:actions" in message
    # No hot loop: a handful of requests over ten seconds, not hundreds.
    tenant.clear_requests()
    time.sleep(10)
    assert len(tenant.requests()) <= 12, [(r.method, r.path, r.status) for r in tenant.requests()]
    if fault == "bad-secret":
        make_secret(k8s_api, namespace, "auth0-mgmt", {"client_id": real.client_id, "client_secret": real.client_secret})
        wait_condition(k8s_api, namespace, "prod", timeout=60)
    if fault == "no-scopes":
        granted = tenant.clients[1]
        make_secret(k8s_api, namespace, "auth0-mgmt",
                    {"client_id": granted.client_id, "client_secret": granted.client_secret})
        wait_condition(k8s_api, namespace, "prod", timeout=60)
    if fault == "rate-limited":
        tenant.fail_next(429, count=0)
        wait_condition(k8s_api, namespace, "prod", timeout=360)


def test_operator_killed_mid_reconcile_converges_without_duplicates(k8s_api, namespace, run_operator,
                                                                    setup_channel, sms_emulator):
    ch = setup_channel(namespace)
    ch.tenant.set_build_seconds(3)
    operator = run_operator()
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_for(lambda: owned_actions(ch.tenant.state()), timeout=90, interval=0.05, what="the action to be created")
    operator.kill()  # while the operator waits for the build
    # It really was mid-sync: the action exists but was never deployed, no provider yet, and the
    # channel never reported Auth0Synced.
    killed_at = ch.tenant.state()
    (action,) = owned_actions(killed_at)
    assert action["deployed_version"] is None and killed_at["phone_providers"] == []
    assert condition(get_channel(k8s_api, namespace, "prod"), "Auth0Synced").get("status") != "True"
    ch.tenant.set_build_seconds(0.3)
    run_operator()
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    state = ch.tenant.state()
    (resumed,) = owned_actions(state)
    assert resumed["id"] == action["id"] and resumed["deployed_version"] is not None  # adopted, not duplicated
    assert len(state["phone_providers"]) == 1
    assert all(len(chain) <= 1 for chain in state["bindings"].values())


# The stand-in relay sees a changed Secret this long after it changed, like a running pod whose
# mounted Secret the kubelet refreshes (about a minute in a real cluster); kwok readies pods at
# once, so only the operator's propagation wait keeps Auth0 from using a key the relay lacks.
KUBELET_SECRET_REFRESH = 3.0


def test_signing_key_rotation_under_traffic_loses_no_otp(k8s_api, namespace, run_operator, setup_channel,
                                                         sms_emulator, relay_from_deployment):
    operator = run_operator("--key-propagation", str(2 * KUBELET_SECRET_REFRESH))
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    relay = relay_from_deployment(namespace, "prod-relay", ch.public_url, sync_interval=KUBELET_SECRET_REFRESH)
    (old_key,) = signing_keys(k8s_api, namespace, "prod")
    request = "2026-11-25T00:00:00Z"
    with OtpTraffic(ch.tenant, limit=300) as traffic:
        traffic.wait_for_more(3, "traffic before the rotation")
        patch_channel(k8s_api, namespace, "prod",
                      {"metadata": {"annotations": {names.ANNOTATION_ROTATE_SIGNING_KEY: request}}})
        wait_for(lambda: rotation_finished(k8s_api, namespace, "prod", request, old_key), timeout=120,
                 what="the rotation to finish")
        # The relay itself no longer accepts the old key ...
        wait_for(lambda: relay.relay.post(otp_body("+6598765432"), old_key).status_code == 401,
                 timeout=4 * KUBELET_SECRET_REFRESH, what="the relay to refuse the retired key")
        # ... and OTPs still go through after that.
        traffic.wait_for_more(5, "traffic after retirement")
    assert len(traffic.outcomes) >= 10
    assert traffic.failures() == []
    channel = wait_condition(k8s_api, namespace, "prod", timeout=30)
    wait_for_event(k8s_api, namespace, "prod", "SigningKey")
    assert channel["status"]["signingKey"]["keys"] == 1
    operator.assert_no_secrets_logged([old_key, *signing_keys(k8s_api, namespace, "prod"), *ch.secret_values])


def test_suspend_stops_all_writes(k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    run_operator("--drift-interval", "2")
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    patch_channel(k8s_api, namespace, "prod", {"spec": {"suspend": True}})
    wait_condition(k8s_api, namespace, "prod", "Ready", "True", reason="Suspended", timeout=30)
    ch.tenant.clear_requests()
    apps = client.AppsV1Api(k8s_api)
    # Changes to both sides: the Auth0 name (an Auth0 input; written in the same pass that would
    # report it) and the relay's replicas. The operator acknowledges the new generation ...
    patch_channel(k8s_api, namespace, "prod", {"spec": {"relay": {"replicas": 3}, "auth0": {"name": "renamed"}}})
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "True", timeout=30)
    assert condition(channel, "Ready")["reason"] == "Suspended"
    # ... having written nothing (a pass that ignored suspend would have written both first).
    assert apps.read_namespaced_deployment("prod-relay", namespace).spec.replicas == 2
    assert ch.tenant.requests() == []
    assert [a["name"] for a in owned_actions(ch.tenant.state(), prefix="")] == [f"otp-relay-{namespace}-prod"]
    patch_channel(k8s_api, namespace, "prod", {"spec": {"suspend": False}})
    wait_condition(k8s_api, namespace, "prod", timeout=60)
    wait_for(lambda: apps.read_namespaced_deployment("prod-relay", namespace).spec.replicas == 3, timeout=30,
             what="replicas 3 after resuming")
    assert [a["name"] for a in owned_actions(ch.tenant.state(), prefix="")] == ["renamed"]


def test_drift_in_auth0_is_repaired_by_the_timer(k8s_api, namespace, run_operator, auth0_tenant, setup_channel,
                                                 sms_emulator):
    run_operator("--drift-interval", "2")
    # A drift check every 2 s is 7 reads every 2 s: more than a free tenant's 2/s, so the
    # dashboard user below would meet 429s. Drift is the point here, not rate limits: a paid tenant.
    tenant = auth0_tenant()
    tenant.route_phone_messages_to("phone-provider")
    ch = setup_channel(namespace, tenant=tenant)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    channel = wait_condition(k8s_api, namespace, "prod", timeout=90)
    provider_id = channel["status"]["auth0"]["providerId"]
    # A dashboard user disables the provider through the Management API.
    Dashboard(ch.tenant, ch.tenant.clients[0])("PATCH", f"/branding/phone/providers/{provider_id}", json={"disabled": True})
    assert ch.tenant.state()["phone_providers"][0]["disabled"] is True

    wait_for(lambda: ch.tenant.state()["phone_providers"][0]["disabled"] is False, timeout=30,
             what="the drift timer to re-enable the provider")
    wait_for_event(k8s_api, namespace, "prod", "Auth0Repaired")
