"""The real node's own life: it starts next to kwok's Node, runs a pod, and stopping the cluster
leaves no process, mount, network namespace or network interface behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from otp_sandbox import image
from otp_sandbox.controlplane import FAKE_NODE, ControlPlane
from otp_sandbox.controlplane.node import NODE_NAME, mounts_under, node_selector, toleration

from tests.support.node import wait_pod_ready

pytestmark = [pytest.mark.cluster, pytest.mark.container, pytest.mark.kubelet]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def interfaces() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_node_starts_runs_a_pod_and_stopping_leaves_nothing_behind(tmp_path: Path) -> None:
    plane = ControlPlane(profile="full", real_node=image.node_images(report=lambda text, finished=True: None),
                         run_dir=tmp_path / "cluster")
    plane.start()
    node = plane.node
    try:
        assert node is not None and node.started_seconds > 0
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        core = client.CoreV1Api(api)
        nodes = {n.metadata.name: n for n in core.list_node().items}
        assert set(nodes) == {FAKE_NODE, NODE_NAME}
        real = nodes[NODE_NAME]
        assert real.status.node_info.container_runtime_version.startswith("containerd://")
        assert [t.key for t in real.spec.taints] == [toleration()["key"]]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"}, "spec": {
            "nodeSelector": node_selector(), "tolerations": [toleration()],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532},
            "containers": [{"name": "main", "image": image.reference(), "command": ["sleep", "600"],
                            "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                                                "allowPrivilegeEscalation": False}}]}}
        core.create_namespaced_pod("default", pod)
        running = wait_pod_ready(api, "default", "sleeper")
        assert running.status.pod_ip in {str(a) for a in node.subnet.hosts()}
        # The node's own interfaces: its bridge and the veths enslaved to it (other tests' podman
        # containers may add interfaces to this host meanwhile).
        attached = set(os.listdir(f"/sys/class/net/{node.bridge}/brif"))
        assert node.bridge in interfaces() and attached, "a bridge and the pods' veths exist while it runs"
        assert mounts_under(node.directory), "container roots and volumes are mounted while it runs"
        api.close()
    finally:
        stopped = time.monotonic()
        plane.stop()
    assert time.monotonic() - stopped < 60
    assert processes_mentioning(str(node.directory)) == []
    assert processes_mentioning("sleep 600") == []
    assert mounts_under(node.directory) == [] and not node.directory.exists()
    assert interfaces() & (attached | {node.bridge}) == set()
