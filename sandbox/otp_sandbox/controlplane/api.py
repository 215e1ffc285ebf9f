"""A minimal HTTPS client for the API server, used only to bring the control plane up (readiness
probes, the fake Node). Tests and the operator use the real Kubernetes client instead."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


def tls_context(ca_cert: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def client(server: str, ca_cert: Path, cert: Path | None = None, key: Path | None = None) -> httpx.Client:
    credentials = (cert, key) if cert is not None and key is not None else None
    return httpx.Client(base_url=server, verify=tls_context(ca_cert, credentials), timeout=5.0)


def is_ok(http: httpx.Client, path: str) -> bool:
    try:
        return http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def fake_node(name: str) -> dict[str, Any]:
    """A Node that kwok manages (selected by annotation, no taint, so ordinary Pods land on it)."""
    key, value = FAKE_NODE_ANNOTATION
    # More pods than a kubelet's default 110, and room for their requests (a relay pod asks for
    # 50m CPU: 32 cores held 640): kwok runs none, and benchmarks schedule hundreds.
    resources = {"cpu": "256", "memory": "2Ti", "pods": "5000", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "type": "kwok",
            },
        },
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
        },
    }


def node_ready(http: httpx.Client, name: str) -> bool:
    try:
        response = http.get(f"/api/v1/nodes/{name}")
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    conditions = response.json().get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def create(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = http.post(path, json=body)
    if response.status_code not in (200, 201, 409):
        raise RuntimeError(f"POST {path} failed: {response.status_code} {response.text[:300]}")
