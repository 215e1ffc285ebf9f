"""Pure rendering: a channel -> the manifests of its children (applied with server-side apply)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names, podtemplate
from .spec import ChannelSpec

DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "128Mi"},
}


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Children:
    apply: tuple[dict[str, Any], ...]  # in order: signing-key Secret, Deployment, Service, ...
    delete: tuple[ChildRef, ...]  # optional children the spec no longer asks for


def owner_reference(channel_uid: str, channel_name: str) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": channel_name,
        "uid": channel_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def ref_of(manifest: Mapping[str, Any]) -> ChildRef:
    meta = manifest["metadata"]
    return ChildRef(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def _metadata(ch: ChannelSpec, name: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ch.namespace,
        "labels": names.child_labels(ch.name),
        "ownerReferences": [dict(owner)],
    }


def signing_key_secret(ch: ChannelSpec, keys: tuple[str, ...], owner: Mapping[str, Any]) -> dict[str, Any]:
    text = "".join(f"{key}\n" for key in keys)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(ch, names.signing_key_secret_name(ch.name), owner),
        "type": "Opaque",
        "data": {names.SIGNING_KEY_SECRET_KEY: base64.b64encode(text.encode()).decode()},
    }


def relay_env(ch: ChannelSpec) -> list[dict[str, str]]:
    """The relay's configuration through its OTP_RELAY_* environment contract."""
    env: dict[str, str] = {
        "OTP_RELAY_LISTEN": f"0.0.0.0:{names.RELAY_PORT}",
        "OTP_RELAY_SMS_REGION": ch.sms.region,
        "OTP_RELAY_SUBACCOUNT": ch.sms.subaccount_id,
        "OTP_RELAY_API_KEY_FILE": f"{names.SMS_KEY_MOUNT_DIR}/{names.SMS_KEY_FILE}",
        "OTP_RELAY_SIGNING_KEY_FILE": f"{names.SIGNING_KEY_MOUNT_DIR}/{names.SIGNING_KEY_SECRET_KEY}",
        "OTP_RELAY_ENCODING": ch.sms.encoding,
        "OTP_RELAY_PER_RECIPIENT": f"{ch.policy.per_recipient_limit}/{ch.policy.per_recipient_window}",
    }
    if ch.sms.base_url:
        env["OTP_RELAY_SMS_BASE_URL"] = ch.sms.base_url
    if ch.sms.sender:
        env["OTP_RELAY_SENDER"] = ch.sms.sender
    if ch.policy.allowed_countries:
        env["OTP_RELAY_ALLOWED_COUNTRIES"] = ",".join(ch.policy.allowed_countries)
    if ch.relay.path_prefix:
        env["OTP_RELAY_PATH_PREFIX"] = ch.relay.path_prefix
    return [{"name": key, "value": value} for key, value in env.items()]


def _resources(ch: ChannelSpec) -> dict[str, Any]:
    wanted = ch.relay.resources or {}
    if not wanted:
        return {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()}
    return {kind: dict(values) for kind, values in wanted.items() if values}


def relay_deployment(
    ch: ChannelSpec, image: str, secrets_checksum: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    probe_common = {"periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3}
    container = {
        "name": names.RELAY_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [names.RELAY_COMMAND],
        "env": relay_env(ch),
        "ports": [{"name": names.RELAY_PORT_NAME, "containerPort": names.RELAY_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": names.RELAY_PORT_NAME}, **probe_common},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": names.RELAY_PORT_NAME},
            "initialDelaySeconds": 5,
            **probe_common,
        },
        "resources": _resources(ch),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "sms-api-key", "mountPath": names.SMS_KEY_MOUNT_DIR, "readOnly": True},
            {"name": "signing-key", "mountPath": names.SIGNING_KEY_MOUNT_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": {
            "replicas": ch.relay.replicas,
            "selector": {"matchLabels": names.selector_labels(ch.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": names.child_labels(ch.name),
                    "annotations": {names.ANNOTATION_SECRETS_CHECKSUM: secrets_checksum},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": names.RELAY_RUN_AS_USER,
                        "runAsGroup": names.RELAY_RUN_AS_USER,
                        "fsGroup": names.RELAY_RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "sms-api-key",
                            "secret": {
                                "secretName": ch.sms.api_key.name,
                                "items": [{"key": ch.sms.api_key.key, "path": names.SMS_KEY_FILE}],
                                "defaultMode": 0o440,
                            },
                        },
                        {
                            "name": "signing-key",
                            "secret": {
                                "secretName": names.signing_key_secret_name(ch.name),
                                "items": [
                                    {"key": names.SIGNING_KEY_SECRET_KEY, "path": names.SIGNING_KEY_SECRET_KEY}
                                ],
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }
    podtemplate.apply(deployment["spec"]["template"], ch.relay.pod_template)
    return deployment


def relay_service(ch: ChannelSpec, owner: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(ch.name),
            "ports": [
                {"name": "http", "port": names.SERVICE_PORT, "targetPort": names.RELAY_PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def relay_ingress(ch: ChannelSpec, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    ingress = ch.relay.ingress
    if ingress is None:
        return None
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": ingress.host,
                "http": {
                    "paths": [
                        {
                            "path": ch.relay.path_prefix or "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": names.relay_name(ch.name), "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": spec,
    }


def relay_pdb(ch: ChannelSpec, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    if ch.relay.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector_labels(ch.name)}},
    }


def render_children(
    ch: ChannelSpec,
    *,
    image: str,
    signing_keys: tuple[str, ...],
    secrets_checksum: str,
    owner: Mapping[str, Any],
) -> Children:
    apply: list[dict[str, Any]] = [
        signing_key_secret(ch, signing_keys, owner),
        relay_deployment(ch, image, secrets_checksum, owner),
        relay_service(ch, owner),
    ]
    delete: list[ChildRef] = []
    name = names.relay_name(ch.name)
    for manifest, api_version, kind in (
        (relay_ingress(ch, owner), "networking.k8s.io/v1", "Ingress"),
        (relay_pdb(ch, owner), "policy/v1", "PodDisruptionBudget"),
    ):
        if manifest is None:
            delete.append(ChildRef(api_version, kind, ch.namespace, name))
        else:
            apply.append(manifest)
    return Children(tuple(apply), tuple(delete))


def service_url(ch: ChannelSpec) -> str:
    return f"http://{names.relay_name(ch.name)}.{ch.namespace}.svc:{names.SERVICE_PORT}"


def relay_rollout(deployment: Mapping[str, Any] | None, secrets_checksum: str) -> tuple[bool, int, str]:
    """(available and fully rolled out with this checksum, available replicas, explanation)."""
    if deployment is None:
        return False, 0, "relay Deployment not created yet"
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    annotations = (((spec.get("template") or {}).get("metadata") or {}).get("annotations")) or {}
    if annotations.get(names.ANNOTATION_SECRETS_CHECKSUM) != secrets_checksum:
        return False, available, "relay Deployment not yet updated"
    if int(status.get("observedGeneration") or 0) < int((deployment.get("metadata") or {}).get("generation") or 0):
        return False, available, "relay rollout pending"
    if wanted == 0:
        return False, 0, "relay scaled to 0 replicas"
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if updated < wanted or total > updated:
        return False, available, f"relay rollout in progress: {updated}/{wanted} replicas updated"
    if (conditions.get("Available") or {}).get("status") != "True" or available < wanted:
        return False, available, f"waiting for relay replicas: {available}/{wanted} available"
    return True, available, f"{available}/{wanted} relay replicas available"
