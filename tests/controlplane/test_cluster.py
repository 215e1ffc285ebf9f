"""The control plane behaves like a real cluster for what the operator relies on."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from otp_sandbox.controlplane import gomodules

from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def test_apiserver_is_ready_and_reports_the_pinned_version(cluster, k8s_api):
    request = k8s_api.param_serialize(
        "GET", "/readyz", query_params=[("verbose", "true")], auth_settings=["BearerToken"]
    )
    response = k8s_api.call_api(*request)
    response.read()
    readyz = response.data.decode()
    assert response.status == 200
    assert "[+]etcd ok" in readyz
    assert readyz.rstrip().endswith("readyz check passed")
    if cluster.control_plane is not None:
        assert client.VersionApi(k8s_api).get_code().git_version == gomodules.kubernetes_version()


def test_rbac_forbids_a_user_until_a_rolebinding_allows_it(k8s_api, user_kubeconfig, namespace):
    tester = config.new_client_from_config(config_file=str(user_kubeconfig("alice", ["otp-testers"])))
    outsider = config.new_client_from_config(config_file=str(user_kubeconfig("mallory")))
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(tester).list_namespaced_config_map(namespace)
        assert denied.value.status == 403
        assert 'User "alice" cannot list resource "configmaps"' in json.loads(denied.value.body)["message"]

        rbac = client.RbacAuthorizationV1Api(k8s_api)
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        })
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "testers-read-configmaps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "otp-testers"}],
        })

        def allowed() -> bool:
            try:
                client.CoreV1Api(tester).list_namespaced_config_map(namespace)
            except ApiException as error:
                assert error.status == 403
                return False
            return True

        wait_for(allowed, 10, what="the RoleBinding to take effect")
        with pytest.raises(ApiException) as still_denied:  # the binding is for the group only
            client.CoreV1Api(outsider).list_namespaced_config_map(namespace)
        assert still_denied.value.status == 403
        with pytest.raises(ApiException) as no_write:  # and the role only reads
            client.CoreV1Api(tester).create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
        assert no_write.value.status == 403
    finally:
        tester.close()
        outsider.close()


def test_deployment_becomes_available_on_the_fake_node(cluster, k8s_api, namespace):
    labels = {"app": "sleeper"}
    client.AppsV1Api(k8s_api).create_namespaced_deployment(namespace, {
        "metadata": {"name": "sleeper"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/sleeper:1"}]},
            },
        },
    })

    def available() -> client.V1Deployment | None:
        deployment = client.AppsV1Api(k8s_api).read_namespaced_deployment("sleeper", namespace)
        conditions = {c.type: c.status for c in deployment.status.conditions or []}
        ok = conditions.get("Available") == "True" and deployment.status.available_replicas == 2
        return deployment if ok else None

    wait_for(available, 60, what="Deployment sleeper to be Available with 2 replicas")
    pods = client.CoreV1Api(k8s_api).list_namespaced_pod(namespace, label_selector="app=sleeper").items
    assert len(pods) == 2
    for pod in pods:
        ready = {c.type: c.status for c in pod.status.conditions or []}
        assert pod.status.phase == "Running" and ready.get("Ready") == "True"
        if cluster.control_plane is not None:
            assert pod.spec.node_name == "kwok-node-0"


def test_a_pod_annotated_with_a_ready_delay_becomes_ready_that_much_later(cluster, k8s_api, namespace):
    """Benchmarks model a real node's pod start (seconds) with kwok's per-pod delay annotation."""
    if cluster.control_plane is None:
        pytest.skip("needs the sandbox's own kwok stages")
    core = client.CoreV1Api(k8s_api)
    created = {}
    for name, annotations in (("delayed", {gomodules.KWOK_POD_READY_DELAY_ANNOTATION: "3s"}), ("plain", {})):
        core.create_namespaced_pod(namespace, {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": "kwok-node-0",
                     "containers": [{"name": "main", "image": "registry.invalid/sleeper:1"}]}})
        created[name] = time.monotonic()

    def ready_after(name: str) -> float | None:
        pod = core.read_namespaced_pod(name, namespace)
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return time.monotonic() - created[name] if ready else None

    wait_for(lambda: ready_after("plain"), 30, what="the plain pod to be Ready")
    assert wait_for(lambda: ready_after("delayed"), 30, what="the delayed pod to be Ready") >= 3.0


def test_garbage_collector_deletes_an_owned_configmap_with_its_owner(k8s_api, namespace):
    core = client.CoreV1Api(k8s_api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    owned_name = f"owned-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_config_map(namespace, {"metadata": {
        "name": owned_name,
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}],
    }})
    core.delete_namespaced_config_map("owner", namespace)

    def owned_gone() -> bool:
        try:
            core.read_namespaced_config_map(owned_name, namespace)
        except ApiException as error:
            assert error.status == 404
            return True
        return False

    wait_for(owned_gone, 60, what=f"the garbage collector to delete {owned_name}")
