"""The operator's own container, from the project's image, running on the real node as the
chart renders it (its ServiceAccount and RBAC, security settings and arguments), brings a channel
whose relay pods also run on the node to Ready.

What the sandbox cannot give a pod, and so is changed here: the API server and the Auth0
emulator listen on loopback only and there is no kube-proxy for the ``kubernetes`` Service, so the
operator pod uses the host's network (API server address in KUBERNETES_SERVICE_HOST/PORT; its
in-cluster token and CA are the real ones), with its liveness port moved to a free one on the
node's address (where the kubelet probes it) and its metrics server off, and
it trusts the sandbox CA (the emulators' issuer) through SSL_CERT_FILE."""

from __future__ import annotations

import copy
from urllib.parse import urlsplit

import pytest
from kubernetes import client
from otp_sandbox import image
from otp_sandbox.controlplane.node import NODE_NAME, node_selector, toleration
from otp_sandbox.ingress import SANDBOX_CA_DIR, SANDBOX_CA_NAME, apply_sandbox_ca
from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS

from tests.chart.helm import set_values
from tests.chart.kube import deployment_available, server_side_apply
from tests.fixtures.relay import free_port
from tests.support.channels import create_channel, delete_all_channels, signing_keys, wait_condition, wait_for
from tests.support.leaks import assert_no_secrets

from tests.support.node import real_node_pod_template

pytestmark = [pytest.mark.cluster, pytest.mark.container]


def operator_deployment(helm, namespace: str, server: str, node_ip: str, ca_file: str) -> tuple[list[dict], dict]:
    repository, tag = image.reference().rsplit(":", 1)
    allowed = list(zip(SANDBOX_ENDPOINT_ARGS[::2], SANDBOX_ENDPOINT_ARGS[1::2]))
    objects = helm.template(*set_values({
        "image.repository": repository, "image.tag": tag, "image.pullPolicy": "Never",
        "nodeSelector": node_selector(), "tolerations": [toleration()],
        "allowedEndpoints.auth0Domains": [v for flag, v in allowed if flag == "--allow-auth0-domain"],
        "allowedEndpoints.smsBaseUrls": [v for flag, v in allowed if flag == "--allow-sms-base-url"],
    }), release="otp", namespace=namespace)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    others = [o for o in objects if o["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                                   "RoleBinding"}]
    deployment = copy.deepcopy(deployment)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    address = urlsplit(server)
    liveness, metrics = free_port(), free_port()
    pod["hostNetwork"] = True
    # On the host's network the metrics server (all interfaces) would be exposed: it is left off.
    container["args"] = [a.replace("0.0.0.0:8080", f"{node_ip}:{liveness}") if a.startswith("--liveness") else a
                         for a in container["args"] if not a.startswith("--metrics-port")]
    # At DEBUG, so the leak scan covers everything kopf and the operator can log.
    container["args"] = [a for a in container["args"] if not a.startswith("--log-level")] + ["--log-level=DEBUG"]
    for port in container["ports"]:
        port["containerPort"] = {"liveness": liveness, "metrics": metrics}[port["name"]]
    container["env"] = [*(container.get("env") or []),
                        {"name": "KUBERNETES_SERVICE_HOST", "value": address.hostname},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": str(address.port)},
                        {"name": "SSL_CERT_FILE", "value": ca_file}]
    container["volumeMounts"].append({"name": SANDBOX_CA_NAME, "mountPath": SANDBOX_CA_DIR, "readOnly": True})
    pod["volumes"].append({"name": SANDBOX_CA_NAME, "configMap": {"name": SANDBOX_CA_NAME}})
    return others, deployment


@pytest.mark.timeout(600)  # its waits add up to 480 s (operator pod, then relay pods, on the real node)
def test_operator_container_on_the_node_brings_a_channel_to_ready(
        helm, k8s_api, cluster, namespace, otpchannel_crd, auth0_emulator, setup_channel, sms_emulator,
        ssl_cert_file, real_node) -> None:
    ca_file = apply_sandbox_ca(k8s_api, namespace, ssl_cert_file)
    others, deployment = operator_deployment(helm, namespace, cluster.control_plane.server, real_node.gateway, ca_file)
    for body in others:
        server_side_apply(k8s_api, body, dry_run=False)
    server_side_apply(k8s_api, deployment, dry_run=False)
    name = deployment["metadata"]["name"]
    try:
        core = client.CoreV1Api(k8s_api)
        try:
            wait_for(lambda: deployment_available(k8s_api, namespace, name, 1), timeout=180, interval=1.0,
                     what="the operator Deployment available on the real node")
        except AssertionError:
            for item in core.list_namespaced_pod(namespace).items:
                print(item.metadata.name, item.spec.node_name, item.status.phase, item.status.container_statuses)
                try:
                    print(core.read_namespaced_pod_log(item.metadata.name, namespace)[-3000:])
                except Exception as error:  # noqa: BLE001
                    print("no log:", error)
            print([ (e.reason, e.message) for e in core.list_namespaced_event(namespace).items][-15:])
            raise
        (pod,) = client.CoreV1Api(k8s_api).list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=operator").items
        assert pod.spec.node_name == NODE_NAME and pod.spec.service_account_name == deployment["spec"]["template"][
            "spec"]["serviceAccountName"]
        assert pod.status.container_statuses[0].image == image.reference()

        ch = setup_channel(namespace)
        manifest = ch.manifest(sms_emulator.base_url)
        manifest["spec"]["relay"]["podTemplate"] = real_node_pod_template()
        create_channel(k8s_api, manifest)
        channel = wait_condition(k8s_api, namespace, "prod", timeout=300)
        assert channel["status"]["relay"]["availableReplicas"] == 2
        logs = client.CoreV1Api(k8s_api).read_namespaced_pod_log(pod.metadata.name, namespace)
        assert "DEBUG" in logs  # the scan saw debug output
        assert_no_secrets(logs, [*ch.secret_values, *signing_keys(k8s_api, namespace, "prod")], "the operator pod's log")
    finally:
        # Removed by the operator pod while it runs: one left with its finalizer would block the
        # next test's operator, its Secrets gone with this namespace.
        delete_all_channels(k8s_api)
        client.AppsV1Api(k8s_api).delete_namespaced_deployment(name, namespace)
        for body in others:
            if body["kind"].startswith("Cluster"):
                rbac = client.RbacAuthorizationV1Api(k8s_api)
                delete = rbac.delete_cluster_role if body["kind"] == "ClusterRole" else rbac.delete_cluster_role_binding
                delete(body["metadata"]["name"])
