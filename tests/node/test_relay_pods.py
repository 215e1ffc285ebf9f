"""A channel's relay pods on the real kubelet Node: placed there by the channel's own
``spec.relay.podTemplate``, started from the project's image under the relay's security settings,
Ready through their real probes (kwok would mark them Ready without running anything)."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client
from otp_operator import names
from otp_sandbox import image
from otp_sandbox.controlplane.node import NODE_NAME, RealNode

from tests.support.channels import create_channel, wait_condition

from tests.support.node import is_ready, probe_port, real_node_pod_template, relay_pods

pytestmark = [pytest.mark.cluster, pytest.mark.container]


def test_channel_relay_pods_run_on_the_real_node_and_pass_their_probes(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, real_node: RealNode) -> None:
    run_operator()
    ch = setup_channel(namespace)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["relay"]["podTemplate"] = real_node_pod_template()
    create_channel(k8s_api, manifest)

    channel = wait_condition(k8s_api, namespace, "prod", timeout=240)
    assert channel["status"]["relay"]["availableReplicas"] == 2
    pods = relay_pods(k8s_api, namespace, "prod")
    assert len(pods) == 2 and all(is_ready(p) for p in pods)
    deployment = client.AppsV1Api(k8s_api).read_namespaced_deployment(names.relay_name("prod"), namespace)
    container = k8s_api.sanitize_for_serialization(deployment.spec.template.spec.containers[0])
    path, port = probe_port(container)
    for pod in pods:
        assert pod.spec.node_name == NODE_NAME
        (status,) = pod.status.container_statuses
        assert status.image == image.reference() and status.state.running is not None
        assert status.restart_count == 0
        assert pod.status.pod_ip in {str(a) for a in real_node.subnet.hosts()}
        # The same endpoint the kubelet probes answers from the pod's own network namespace.
        assert httpx.get(f"http://{pod.status.pod_ip}:{port}{path}", timeout=5).status_code == 200

