"""The operator under failure: HA takeover, API server restarts, deletion racing a reconcile,
deletion policies and escapes, namespace deletion across an operator restart, foreign objects,
tenant and integration changes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from otp_operator import names
from otp_sandbox.controlplane import ControlPlane
from otp_sandbox.crd import install_crd
from otp_sandbox.processes import OperatorProcess, metric_value

from tests.fixtures.operator import TEST_OPERATOR_ARGS
from tests.fixtures.relay import free_port
from tests.support.channels import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create_channel,
    custom,
    delete_all_channels,
    delete_channel,
    events_for,
    get_channel,
    owned_actions,
    patch_channel,
    wait_condition,
    wait_for,
    wait_for_event,
)

pytestmark = pytest.mark.cluster

PEERING_CRD = Path(__file__).resolve().parents[2] / "charts/otp-relay-operator/files/crds/clusterkopfpeerings.kopf.dev.yaml"



def _metric(port: int, name: str) -> float:
    return metric_value(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, name)


def _warnings(api: client.ApiClient, namespace: str, name: str, reason: str) -> list[client.CoreV1Event]:
    return [e for e in events_for(api, namespace, name) if e.type == "Warning" and e.reason == reason]


def _credentials_finalizers(api: client.ApiClient, namespace: str) -> list[str]:
    secret = client.CoreV1Api(api).read_namespaced_secret("auth0-mgmt", namespace)
    return list(secret.metadata.finalizers or [])


# --- HA ------------------------------------------------------------------------------------------

@pytest.fixture
def peering(k8s_api: client.ApiClient) -> str:
    install_crd(k8s_api, path=PEERING_CRD)
    name = f"otp-{uuid.uuid4().hex[:8]}"
    custom(k8s_api).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                                 {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                                  "metadata": {"name": name}})
    yield name
    custom(k8s_api).delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)


def test_two_replicas_one_works_and_the_standby_takes_over(peering, k8s_api, namespace, second_namespace,
                                                           run_operator, setup_channel, sms_emulator):
    # (peering first: torn down last, after the teardown deleted the channels through the replicas)
    # Two replicas with the same arguments, as a Deployment runs them (no --priority).
    # httpx logs each request (Auth0's, the delivery polls) at INFO: what a replica did shows.
    def start(pod: str):
        return run_operator("--peering", peering, "--peering-lifetime", "6", env={"POD_ID": pod})

    def peers() -> dict:
        obj = custom(k8s_api).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
        return {k: v for k, v in (obj.get("status") or {}).items() if v}

    # One after the other, so the pause is observable: with --peering kopf starts paused, and the
    # first replica, alone, resumes; the second starts paused and only resumes if it outranks the
    # first, which then pauses in its favour. (Started together, a standby that saw the other at
    # once stays paused silently, and nothing in its log tells that apart from "not looked yet".)
    operators = {"replica-a": start("replica-a")}
    wait_for(lambda: "Resuming operations after the pause" in operators["replica-a"].logs(), timeout=60,
             what="the lone first replica to resume")
    operators["replica-b"] = start("replica-b")
    wait_for(lambda: set(peers()) == set(operators), timeout=60, what="both replicas in the peering object")
    priorities = {pod: info["priority"] for pod, info in peers().items()}
    assert len(set(priorities.values())) == 2, f"equal priorities freeze every replica: {priorities}"

    active = max(priorities, key=priorities.get)
    standby = min(priorities, key=priorities.get)
    if standby == "replica-a":
        wait_for(lambda: "Pausing operations in favour of" in operators[standby].logs(), timeout=30,
                 what="the first replica to pause for the second, which outranks it")
    else:  # replica-b saw replica-a live from its first look: it never resumed
        assert "Resuming operations" not in operators[standby].logs()
    first = setup_channel(namespace)
    create_channel(k8s_api, first.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)  # two live replicas still serve
    # Only the active one worked on it: the standby sent Auth0 nothing while the active lived
    # (kopf may start its channel daemon for an instant before the pause cancels it).
    assert "HTTP Request:" in operators[active].logs()
    assert "HTTP Request:" not in operators[standby].logs()

    operators[active].kill()  # a crash: no goodbye in the peering object
    second = setup_channel(second_namespace)
    create_channel(k8s_api, second.manifest(sms_emulator.base_url))
    # The standby waits out the dead peer's lifetime (6 s), then converges the new channel.
    wait_condition(k8s_api, second_namespace, "prod", timeout=90)
    assert (owned_actions(second.tenant.state())[0]["name"] == f"otp-relay-{second_namespace}-prod")
    assert operators[standby].running() and "HTTP Request:" in operators[standby].logs()


# --- the API server goes away ----------------------------------------------------------------------

@pytest.fixture
def own_control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of this test's own (kwok's fake Node, no real node): restarting the
    session's API server would break every test sharing it."""
    plane = ControlPlane(profile="full")
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.mark.timeout(480)  # its own control plane, then waits of up to 420 s
def test_api_server_restart_while_the_operator_runs(own_control_plane, ssl_cert_file, setup_channel, sms_emulator,
                                                    tmp_path):
    api = config.new_client_from_config(config_file=str(own_control_plane.kubeconfig))
    install_crd(api)
    core = client.CoreV1Api(api)
    first_ns, second_ns = "restart-a", "restart-b"
    for name in (first_ns, second_ns):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    operator = OperatorProcess(own_control_plane.kubeconfig, ssl_cert_file, tmp_path / "operator.log",
                               TEST_OPERATOR_ARGS).start()
    try:
        first = setup_channel(first_ns, api=api)
        create_channel(api, first.manifest(sms_emulator.base_url))
        wait_condition(api, first_ns, "prod", timeout=90)

        own_control_plane.restart_apiserver(downtime=3)

        # Both an existing channel's change and a new channel converge, with no operator restart.
        patch_channel(api, first_ns, "prod", {"spec": {"policy": {"allowedCountries": ["SG"]}}})
        second = setup_channel(second_ns, api=api)
        create_channel(api, second.manifest(sms_emulator.base_url))
        wait_condition(api, first_ns, "prod", timeout=120)
        wait_condition(api, second_ns, "prod", timeout=120)
        assert operator.running()
        delete_all_channels(api)  # the tenants are still there: a clean removal
        assert all(owned_actions(ch.tenant.state()) == [] for ch in (first, second))
    finally:
        operator.stop()
        api.close()


# --- deletion racing a reconcile ---------------------------------------------------------------------

def test_delete_during_a_reconcile_leaves_nothing_in_auth0(k8s_api, namespace, run_operator, setup_channel,
                                                          sms_emulator):
    """kopf cancels a deleted channel's loop and runs the cleanup, but a write the sync already
    sent still lands at Auth0. The cleanup must not read the tenant before that write has its
    answer, or it misses what the write creates and the tenant keeps an integration (here: an
    action, next a binding and provider) pointing at a deleted relay."""
    metrics_port = free_port()
    run_operator("--metrics-port", str(metrics_port))
    ch = setup_channel(namespace)
    ch.tenant.set_latency(2000)  # every request takes 2 s: the create stays in flight that long
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_for(lambda: "POST /api/v2/actions/actions" in ch.tenant.state()["in_flight"], timeout=120,
             interval=0.05, what="the sync's action create to be in flight")
    # Requests sent from now on are answered at once: the cleanup's reads would overtake the
    # create (requests on separate connections finish in any order).
    ch.tenant.set_latency(0)
    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=90, what="the channel to go")
    # The channel's loop has ended and Auth0 has answered everything: nothing can change any more.
    wait_for(lambda: _metric(metrics_port, "otp_operator_channels") == 0, timeout=30, what="the loop to stop")
    wait_for(lambda: ch.tenant.state()["in_flight"] == [], timeout=30, what="every request to be answered")
    state = ch.tenant.state()
    assert any(w.method == "POST" and w.path == "/api/v2/actions/actions" for w in ch.tenant.writes())
    assert owned_actions(state) == [] and state["phone_providers"] == [], state
    assert state["bindings"].get("custom-phone-provider", []) == [], state["bindings"]


# --- deletion policies and escapes ------------------------------------------------------------------

def test_orphan_policy_leaves_auth0_and_needs_no_credentials(k8s_api, namespace, run_operator, setup_channel,
                                                             sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url, deletionPolicy="Orphan"))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    assert names.FINALIZER_CREDENTIALS_IN_USE not in _credentials_finalizers(k8s_api, namespace)
    ch.tenant.clear_requests()
    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    assert len(owned_actions(ch.tenant.state())) == 1 and ch.tenant.writes() == []
    wait_for_event(k8s_api, namespace, "prod", "Auth0Orphaned")


def test_suspended_channel_is_deleted_without_touching_auth0(k8s_api, namespace, run_operator, setup_channel,
                                                             sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    patch_channel(k8s_api, namespace, "prod", {"spec": {"suspend": True}})
    wait_condition(k8s_api, namespace, "prod", "Ready", "True", reason="Suspended", timeout=30)
    ch.tenant.clear_requests()
    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    assert ch.tenant.writes() == [] and len(owned_actions(ch.tenant.state())) == 1
    # kopf posts Events from a background queue: wait for the Warning, then check it is the only one.
    wait_for(lambda: _warnings(k8s_api, namespace, "prod", "Auth0Orphaned"), timeout=30,
             what="the Auth0Orphaned Warning")
    (warning,) = _warnings(k8s_api, namespace, "prod", "Auth0Orphaned")
    assert "spec.suspend" in warning.message


def test_stuck_deletion_warns_once_and_can_be_abandoned(k8s_api, namespace, run_operator, setup_channel,
                                                        sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    ch.tenant.fail_next(503, count=10_000)
    ch.tenant.clear_requests()
    delete_channel(k8s_api, namespace, "prod")
    channel = wait_condition(k8s_api, namespace, "prod", "Auth0Synced", "False", reason="Auth0Unavailable",
                             timeout=90)
    assert names.ANNOTATION_ABANDON_CLEANUP in condition(channel, "Auth0Synced")["message"]
    # Several attempts (each retried by the client a few times), one Warning.
    wait_for(lambda: _warnings(k8s_api, namespace, "prod", "Auth0Unavailable"), timeout=30,
             what="the Auth0Unavailable Warning")
    wait_for(lambda: len([r for r in ch.tenant.requests() if r.status == 503]) >= 9, timeout=90,
             what="at least three removal attempts")
    assert len(_warnings(k8s_api, namespace, "prod", "Auth0Unavailable")) == 1

    patch_channel(k8s_api, namespace, "prod",
                  {"metadata": {"annotations": {names.ANNOTATION_ABANDON_CLEANUP: "true"}}})
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    assert len(owned_actions(ch.tenant.state())) == 1  # left as it was, and said so
    # kopf posts Events in the background: the Warning may come just after the channel went.
    (warning,) = wait_for(lambda: _warnings(k8s_api, namespace, "prod", "CleanupAbandoned"), timeout=30,
                          what="the CleanupAbandoned Warning")
    assert ch.tenant.domain in warning.message
    wait_for(lambda: names.FINALIZER_CREDENTIALS_IN_USE not in _credentials_finalizers(k8s_api, namespace),
             timeout=30, what="the credentials Secret released")


def test_namespace_deletion_completes_across_an_operator_restart(k8s_api, run_operator, setup_channel,
                                                                sms_emulator):
    core = client.CoreV1Api(k8s_api)
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    operator = run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    assert names.FINALIZER_CREDENTIALS_IN_USE in _credentials_finalizers(k8s_api, namespace)

    operator.stop()
    core.delete_namespace(namespace)
    # The namespace controller removes what it can; the credentials stay for the cleanup.
    wait_for(lambda: not core.list_namespaced_secret(namespace, field_selector="metadata.name=eightbyeight").items,
             timeout=60, what="the namespace's other Secrets deleted")
    secret = core.read_namespaced_secret("auth0-mgmt", namespace)
    assert secret.metadata.deletion_timestamp is not None
    assert len(owned_actions(ch.tenant.state())) == 1

    run_operator()

    def namespace_gone() -> bool:
        try:
            core.read_namespace(namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(namespace_gone, timeout=120, what="the namespace to be deleted")
    state = ch.tenant.state()
    assert owned_actions(state) == [] and state["phone_providers"] == []


# --- children the operator does not own ---------------------------------------------------------

def test_unrelated_objects_with_a_childs_name_are_neither_taken_over_nor_deleted(k8s_api, namespace, run_operator,
                                                                                 setup_channel, sms_emulator):
    core, policy = client.CoreV1Api(k8s_api), client.PolicyV1Api(k8s_api)
    core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="prod-relay", labels={"app": "someone-else"}),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=8443)], selector={"app": "someone-else"})))
    # A one-replica relay has no PodDisruptionBudget: the operator deletes its own, never this one.
    policy.create_namespaced_pod_disruption_budget(namespace, client.V1PodDisruptionBudget(
        metadata=client.V1ObjectMeta(name="prod-relay"),
        spec=client.V1PodDisruptionBudgetSpec(min_available=1, selector=client.V1LabelSelector(
            match_labels={"app": "someone-else"}))))
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url, replicas=1))
    channel = wait_condition(k8s_api, namespace, "prod", "Ready", "False", reason="ApplyFailed", timeout=90)
    assert f"Service {namespace}/prod-relay" in condition(channel, "Ready")["message"]
    service = core.read_namespaced_service("prod-relay", namespace)
    assert not service.metadata.owner_references and service.spec.selector == {"app": "someone-else"}
    assert [p.port for p in service.spec.ports] == [8443]
    assert owned_actions(ch.tenant.state()) == []

    core.delete_namespaced_service("prod-relay", namespace)
    wait_condition(k8s_api, namespace, "prod", timeout=120)
    pdb = policy.read_namespaced_pod_disruption_budget("prod-relay", namespace)
    assert pdb.spec.selector.match_labels == {"app": "someone-else"} and not pdb.metadata.owner_references


# --- tenant and integration changes -------------------------------------------------------------

def test_tenant_change_is_refused_once_registered(k8s_api, namespace, otpchannel_crd):
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OtpChannel",
                "metadata": {"name": "prod", "namespace": namespace},
                "spec": {"auth0": {"domain": "old.eu.auth0.com", "credentialsSecretRef": {"name": "auth0-mgmt"}},
                         "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
                         "relay": {"publicUrl": "https://otp.example/prod"}}}
    create_channel(k8s_api, manifest)
    # Not registered yet (e.g. a typo that never reached Auth0): free to fix.
    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"domain": "typo-fixed.eu.auth0.com"}}})
    custom(k8s_api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "prod",
        {"status": {"auth0": {"integration": "phone-provider", "name": "otp-relay-x", "actionId": "act_1"}}})
    with pytest.raises(ApiException) as refused:
        patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"domain": "new.eu.auth0.com"}}})
    assert refused.value.status == 422
    assert "create a new OtpChannel" in refused.value.body and "spec.auth0.domain" in refused.value.body
    # Everything else stays editable.
    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"integration": "send-phone-message"}}})
    assert get_channel(k8s_api, namespace, "prod")["spec"]["auth0"]["domain"] == "typo-fixed.eu.auth0.com"


def test_integration_change_removes_the_old_one_first(k8s_api, namespace, run_operator, setup_channel,
                                                      sms_emulator):
    run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    before = wait_condition(k8s_api, namespace, "prod", timeout=90)["status"]["auth0"]
    assert ch.tenant.state()["phone_providers"]
    ch.tenant.route_phone_messages_to("send-phone-message")  # the tenant admin moves MFA off UPE first
    ch.tenant.clear_requests()
    patch_channel(k8s_api, namespace, "prod", {"spec": {"auth0": {"integration": "send-phone-message"}}})
    channel = wait_condition(k8s_api, namespace, "prod", timeout=90)
    assert channel["status"]["auth0"]["integration"] == "send-phone-message"
    state = ch.tenant.state()
    (action,) = owned_actions(state)
    assert action["id"] == channel["status"]["auth0"]["actionId"] != before["actionId"]
    assert state["phone_providers"] == []
    writes = [(w.method, w.path) for w in ch.tenant.writes()]
    removed_old = writes.index(("DELETE", f"/api/v2/actions/actions/{before['actionId']}"))
    created_new = next(i for i, w in enumerate(writes) if w == ("POST", "/api/v2/actions/actions"))
    assert removed_old < created_new, writes
