"""Fixtures of the real-node tests: the 8x8 emulator is one the pods can reach (on the node's
bridge address, certificate valid for it); a relay pod built from the operator's own rendering;
the sandbox's ingress in front of a channel's relay Service."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from otp_operator import names, render
from otp_operator.spec import parse_channel
from otp_sandbox.controlplane.node import RealNode
from otp_sandbox.eightbyeight import EightByEightEmulator
from otp_sandbox.ingress import SANDBOX_CA_DIR, SANDBOX_CA_NAME, apply_sandbox_ca
from otp_sandbox.pki import CertificateAuthority
from otp_sandbox.processes import RelayProcess

from .support import real_node_pod_template, wait_pod_ready


@pytest.fixture(scope="session")
def sms_emulator(sandbox_ca: CertificateAuthority, real_node: RealNode,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[EightByEightEmulator]:
    emulator = EightByEightEmulator.start(sandbox_ca, tmp_path_factory.mktemp("node-sms-emulator"),
                                          listen=f"{real_node.gateway}:0")
    try:
        yield emulator
    finally:
        emulator.stop()


class PodRelay(RelayProcess):
    """A relay running in a pod, driven like a local RelayProcess (post/get/metric) at its pod IP."""

    def __init__(self, url: str, admin_url: str, read_logs: Callable[[], str]) -> None:
        self.url = url
        self.admin_url = admin_url
        self.client = httpx.Client(timeout=30)
        self._read_logs = read_logs

    def logs(self) -> str:
        return self._read_logs()

    def stop(self) -> int:
        self.client.close()
        return 0


@pytest.fixture(scope="module")
def relay_pod(k8s_api: client.ApiClient, real_node: RealNode, ssl_cert_file: Path) -> Callable[..., PodRelay]:
    """``relay_pod(namespace, settings, api_key, signing_keys)`` -> a Ready relay pod on the real
    node: the pod spec the operator renders (image, command, probes, security settings, Secret
    volumes), plus the sandbox CA so the relay trusts the 8x8 emulator."""
    core = client.CoreV1Api(k8s_api)

    def start(namespace: str, settings: Mapping[str, str], api_key: str, signing_keys: tuple[str, ...],
              name: str = "contract") -> PodRelay:
        spec = {
            "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "unused"}},
            "sms": {"subaccountId": settings["SUBACCOUNT"], "apiKeySecretRef": {"name": f"{name}-8x8"}},
            "relay": {"replicas": 1, "publicUrl": "https://relay.example/prod", "podTemplate": real_node_pod_template()},
        }
        channel = parse_channel(namespace, name, spec)
        owner = render.owner_reference("0", name)
        template = render.relay_deployment(channel, "unused", "sum", owner)["spec"]["template"]
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"{name}-8x8"), string_data={"apikey": api_key}))
        core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name=names.signing_key_secret_name(name)),
            data={names.SIGNING_KEY_SECRET_KEY: base64.b64encode("".join(f"{k}\n" for k in signing_keys).encode()).decode()}))
        ca_file = apply_sandbox_ca(k8s_api, namespace, ssl_cert_file)
        pod_spec: dict[str, Any] = template["spec"]
        (container,) = pod_spec["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        env.update({f"OTP_RELAY_{k}": v for k, v in settings.items()})
        env["SSL_CERT_FILE"] = ca_file
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        container["volumeMounts"].append({"name": SANDBOX_CA_NAME, "mountPath": SANDBOX_CA_DIR, "readOnly": True})
        pod_spec["volumes"].append({"name": SANDBOX_CA_NAME, "configMap": {"name": SANDBOX_CA_NAME}})
        core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "spec": pod_spec,
                                               "metadata": {"name": name, "labels": template["metadata"]["labels"]}})
        pod = wait_pod_ready(k8s_api, namespace, name)
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == names.RELAY_PORT_NAME)
        prefix = settings.get("PATH_PREFIX", "").rstrip("/")
        admin_port = next(p["containerPort"] for p in container["ports"] if p["name"] == names.RELAY_ADMIN_PORT_NAME)
        return PodRelay(f"http://{pod.status.pod_ip}:{port}{prefix}", f"http://{pod.status.pod_ip}:{admin_port}",
                        lambda: core.read_namespaced_pod_log(name, namespace))

    return start
