"""Helpers for tests on the sandbox's real kubelet Node: scheduling through the channel's
``spec.relay.podTemplate``, pods read back from the API, the relay's probe port as render.py
sets it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client
from otp_operator import names
from otp_sandbox import image
from otp_sandbox.controlplane import node

from tests.support.channels import wait_for


def real_node_pod_template() -> dict[str, Any]:
    """What a user writes to run the relay on the sandbox's real node with the local image."""
    return {"spec": {"nodeSelector": node.node_selector(), "tolerations": [node.toleration()],
                     "container": {"image": image.reference()}}}


def relay_pods(api: client.ApiClient, namespace: str, channel: str) -> list[client.V1Pod]:
    selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(channel).items())
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_pod_ready(api: client.ApiClient, namespace: str, name: str, timeout: float = 120.0) -> client.V1Pod:
    core = client.CoreV1Api(api)
    return wait_for(lambda: (lambda p: p if is_ready(p) else None)(core.read_namespaced_pod(name, namespace)),
                    timeout=timeout, interval=0.5, what=f"pod {name} Ready on the real node")


def probe_port(container: Mapping[str, Any], probe: str = "readinessProbe") -> tuple[str, int]:
    """(path, port number) of an httpGet probe, the named port resolved like the kubelet does."""
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in container["ports"] if p.get("name") == port)
    return get["path"], int(port)
