"""Pure rendering: a channel -> the manifests of its children (applied with server-side apply)."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from otp_relay import config as relay_config

from . import endpoints, names, podtemplate
from .egress import RelayEgress
from .receipt_tokens import LOG_STREAM, RECEIPT, RotatingTokens
from .spec import ChannelSpec, SpecError

# The relay's memory bound with its default caps is ~242 MB (relay/README.md, "Memory bound").
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "256Mi"},
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


def _lines_secret(ch: ChannelSpec, name: str, key: str, lines: tuple[str, ...],
                  owner: Mapping[str, Any]) -> dict[str, Any]:
    text = "".join(f"{line}\n" for line in lines)
    metadata = _metadata(ch, name, owner)
    metadata["labels"][names.LABEL_SECRET] = names.SECRET_RELAY  # within the operator's Secret watch
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: base64.b64encode(text.encode()).decode()},
    }


def signing_key_secret(ch: ChannelSpec, keys: tuple[str, ...], owner: Mapping[str, Any]) -> dict[str, Any]:
    return _lines_secret(ch, names.signing_key_secret_name(ch.name), names.SIGNING_KEY_SECRET_KEY, keys, owner)


def _token_secret(ch: ChannelSpec, name: str, kind: RotatingTokens, tokens: tuple[str, ...], rotation: str,
                  owner: Mapping[str, Any]) -> dict[str, Any]:
    """``rotation`` is the rotation request the tokens answer (kept in the Secret, so a request
    is handled once)."""
    secret = _lines_secret(ch, name, kind.token_key, tokens, owner)
    secret["data"][kind.rotation_key] = base64.b64encode(rotation.encode()).decode()
    return secret


def receipt_token_secret(ch: ChannelSpec, tokens: tuple[str, ...], rotation: str,
                         owner: Mapping[str, Any]) -> dict[str, Any]:
    """The tokens 8x8's receipts must carry in their path."""
    return _token_secret(ch, names.receipt_token_secret_name(ch.name), RECEIPT, tokens, rotation, owner)


def log_stream_token_secret(ch: ChannelSpec, tokens: tuple[str, ...], rotation: str,
                            owner: Mapping[str, Any]) -> dict[str, Any]:
    """The bearer tokens the relay accepts from Auth0's log stream (spec.conversion)."""
    return _token_secret(ch, names.log_stream_token_secret_name(ch.name), LOG_STREAM, tokens, rotation, owner)


def limits_scope(ch: ChannelSpec) -> str:
    """"channel" when the relays share a state store, else "per-replica"."""
    return "channel" if ch.relay.state_store else "per-replica"


def at_most_one_sms(ch: ChannelSpec) -> str:
    """What the relay's "at most one SMS per message" (idempotency) covers, for status."""
    if ch.relay.state_store:
        return "channel: the replicas share spec.relay.stateStore, so a retried message is sent once"
    replicas = ch.relay.replicas
    if replicas == 0:
        return "none: no relay replica runs"
    where = (f"each of the {replicas} replicas remembers only the messages it served itself, so a retry "
             "that reaches another replica sends a second SMS" if replicas > 1 else
             "the replica's memory is lost when its pod restarts or is replaced")
    return (f"per-replica only: without spec.relay.stateStore {where} (during a rollout the old and new "
            "pods serve side by side); set spec.relay.stateStore for once per channel")


def global_limit_per_relay(ch: ChannelSpec) -> str:
    """The relay's ``OTP_RELAY_GLOBAL_LIMIT``: the channel's budget with a shared store; without
    one each replica holds its share (rounded up, so the channel total may exceed the budget by
    less than one message per replica per window)."""
    limit = ch.policy.global_limit
    if not ch.relay.state_store:
        limit = math.ceil(limit / max(1, ch.relay.replicas))
    return f"{limit}/{ch.policy.global_window}"


def _pumping_env(ch: ChannelSpec) -> dict[str, str]:
    """spec.policy's SMS-pumping rules that are set, as the relay's variables (unset ones keep
    the relay's defaults, their one place)."""
    p = ch.policy
    values = {
        "PER_PREFIX": p.per_prefix, "COUNTRY_HOUR": p.country_hourly, "COUNTRY_DAY": p.country_daily,
        "PER_CLIENT_IP": p.per_client_ip, "MAX_SEGMENTS": str(p.max_segments) if p.max_segments else None,
        "CODE_VALIDITY": p.code_validity,
        "ALLOW_NUMBER_TYPES": ",".join(p.allow_number_types) or None,
        "ALLOW_NON_GEOGRAPHIC": ",".join(map(str, p.allow_non_geographic)) or None,
        "MONITOR_RULES": ",".join(p.monitor_rules) or None,
    }
    return {f"OTP_RELAY_{name}": value for name, value in values.items() if value}


def check_store_capacity(ch: ChannelSpec) -> None:
    """Without a state store each relay keeps its idempotency keys in process, and refuses to
    start with a global limit its store cannot hold: say so on the channel instead."""
    if ch.relay.state_store:
        return
    per_relay = relay_config.Rate.parse(global_limit_per_relay(ch))
    needed = relay_config.keys_needed(per_relay)
    if needed > relay_config.MAX_IDEMPOTENCY_KEYS:
        raise SpecError(
            f"spec.policy.globalLimit {ch.policy.global_limit}/{ch.policy.global_window} gives each of "
            f"{ch.relay.replicas} replica(s) {global_limit_per_relay(ch)}, up to {needed:,} messages "
            f"within the relay's idempotency retention, more than its in-process store's "
            f"{relay_config.MAX_IDEMPOTENCY_KEYS:,} keys: set spec.relay.stateStore, add replicas or "
            "lower the limit")


def relay_env(ch: ChannelSpec) -> list[dict[str, str]]:
    """The relay's configuration through its OTP_RELAY_* environment contract."""
    env: dict[str, str] = {
        "OTP_RELAY_LISTEN": f"0.0.0.0:{names.RELAY_PORT}",
        "OTP_RELAY_ADMIN_LISTEN": f"0.0.0.0:{names.RELAY_ADMIN_PORT}",
        "OTP_RELAY_SMS_REGION": ch.sms.region,
        "OTP_RELAY_SUBACCOUNT": ch.sms.subaccount_id,
        "OTP_RELAY_API_KEY_FILE": f"{names.SMS_KEY_MOUNT_DIR}/{names.SMS_KEY_FILE}",
        "OTP_RELAY_SIGNING_KEY_FILE": f"{names.SIGNING_KEY_MOUNT_DIR}/{names.SIGNING_KEY_SECRET_KEY}",
        "OTP_RELAY_ENCODING": ch.sms.encoding,
        "OTP_RELAY_PER_RECIPIENT": f"{ch.policy.per_recipient_limit}/{ch.policy.per_recipient_window}",
        "OTP_RELAY_GLOBAL_LIMIT": global_limit_per_relay(ch),
        "OTP_RELAY_RECEIPT_URL": ch.relay.public_url + names.RELAY_RECEIPT_PATH,
        "OTP_RELAY_RECEIPT_TOKEN_FILE": f"{names.RECEIPT_TOKEN_MOUNT_DIR}/{names.RECEIPT_TOKEN_SECRET_KEY}",
    }
    store = ch.relay.state_store
    if store:
        env["OTP_RELAY_STATE_URL"] = store.url
        env["OTP_RELAY_STATE_PREFIX"] = f"otp-relay:{ch.namespace}/{ch.name}"
        if store.password:
            env["OTP_RELAY_STATE_PASSWORD_FILE"] = f"{names.STATE_PASSWORD_MOUNT_DIR}/{names.STATE_PASSWORD_FILE}"
        if store.ca:
            env["OTP_RELAY_STATE_CA_FILE"] = f"{names.STATE_CA_MOUNT_DIR}/{names.STATE_CA_FILE}"
    if ch.sms.base_url:
        env["OTP_RELAY_SMS_BASE_URL"] = ch.sms.base_url
    if ch.sms.sender:
        env["OTP_RELAY_SENDER"] = ch.sms.sender
    if ch.policy.allowed_countries:
        env["OTP_RELAY_ALLOWED_COUNTRIES"] = ",".join(ch.policy.allowed_countries)
    env.update(_pumping_env(ch))
    if ch.canary is not None:
        env["OTP_RELAY_CANARY_NUMBER"] = ch.canary.to
    env.update(_voice_env(ch))
    env.update(_conversion_env(ch))
    if ch.relay.path_prefix:
        env["OTP_RELAY_PATH_PREFIX"] = ch.relay.path_prefix
    return [{"name": key, "value": value} for key, value in env.items()]


def _voice_env(ch: ChannelSpec) -> dict[str, str]:
    voice = ch.voice
    if voice is None:
        return {}
    env = {"OTP_RELAY_VOICE": "true", "OTP_RELAY_VOICE_CALLER_ID": voice.caller_id,
           "OTP_RELAY_VOICE_PROFILE": voice.profile, "OTP_RELAY_VOICE_REPETITION": str(voice.repetition),
           "OTP_RELAY_VOICE_PER_RECIPIENT": f"{voice.per_recipient_limit}/{voice.per_recipient_window}"}
    if voice.profiles:
        env["OTP_RELAY_VOICE_PROFILES"] = ",".join(f"{locale}={profile}" for locale, profile in voice.profiles)
    if base_url := endpoints.voice_base_url(ch.sms.base_url):
        env["OTP_RELAY_VOICE_BASE_URL"] = base_url
    return env


def _conversion_env(ch: ChannelSpec) -> dict[str, str]:
    """Only the blocking mode always goes to the relay; the other settings only when set (the
    relay holds their defaults)."""
    conversion = ch.conversion
    if conversion is None:
        return {}
    env = {"OTP_RELAY_CONVERSION": "true",
           "OTP_RELAY_LOG_TOKEN_FILE": f"{names.LOG_TOKEN_MOUNT_DIR}/{names.LOG_TOKEN_SECRET_KEY}",
           "OTP_RELAY_CONVERSION_FAILURE_AFTER": conversion.failure_after,
           "OTP_RELAY_CONVERSION_BLOCKING": conversion.mode}
    optional = {"ALLOW": ",".join(conversion.allow) or None,
                "MIN_SAMPLE": None if conversion.min_sample is None else str(conversion.min_sample),
                "BLOCK_FOR": conversion.block_for,
                "MAX_BLOCKED_SHARE": None if conversion.max_blocked_share_percent is None
                else str(conversion.max_blocked_share_percent)}
    env.update({f"OTP_RELAY_CONVERSION_{key}": value for key, value in optional.items() if value is not None})
    return env


def _resources(ch: ChannelSpec) -> dict[str, Any]:
    wanted = ch.relay.resources or {}
    if not wanted:
        return {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()}
    return {kind: dict(values) for kind, values in wanted.items() if values}


def _topology_spread(ch: ChannelSpec) -> dict[str, Any]:
    """Several replicas prefer different nodes and zones (never blocking scheduling)."""
    if ch.relay.replicas <= 1:
        return {}
    selector = {"matchLabels": names.selector_labels(ch.name)}
    return {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": selector}
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ]
    }


def relay_deployment(
    ch: ChannelSpec, image: str, secrets_checksum: str, owner: Mapping[str, Any]
) -> dict[str, Any]:
    probe_common = {"periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": names.RELAY_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [names.RELAY_COMMAND],
        "env": relay_env(ch),
        "ports": [
            {"name": names.RELAY_PORT_NAME, "containerPort": names.RELAY_PORT, "protocol": "TCP"},
            {"name": names.RELAY_ADMIN_PORT_NAME, "containerPort": names.RELAY_ADMIN_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": names.RELAY_ADMIN_PORT_NAME}, **probe_common},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": names.RELAY_ADMIN_PORT_NAME},
            "initialDelaySeconds": 5,
            **probe_common,
        },
        # Endpoints drop the pod while it still serves; SIGTERM comes after, so no OTP is lost.
        "lifecycle": {"preStop": {"sleep": {"seconds": names.RELAY_PRESTOP_SECONDS}}},
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
            {"name": "receipt-token", "mountPath": names.RECEIPT_TOKEN_MOUNT_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    if ch.conversion is not None:
        container["volumeMounts"].append(
            {"name": "log-stream-token", "mountPath": names.LOG_TOKEN_MOUNT_DIR, "readOnly": True})
    if ch.relay.state_store and ch.relay.state_store.password:
        container["volumeMounts"].append(
            {"name": "state-password", "mountPath": names.STATE_PASSWORD_MOUNT_DIR, "readOnly": True})
    if ch.relay.state_store and ch.relay.state_store.ca:
        container["volumeMounts"].append(
            {"name": "state-ca", "mountPath": names.STATE_CA_MOUNT_DIR, "readOnly": True})
    deployment: dict[str, Any] = {
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
                    "terminationGracePeriodSeconds": names.RELAY_TERMINATION_GRACE_SECONDS,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # No fixed UID/GID/fsGroup: the image's numeric USER satisfies runAsNonRoot, and
                    # OpenShift's restricted SCC assigns its own (a fixed one would be refused).
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    **_topology_spread(ch),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "sms-api-key",
                            "secret": {
                                "secretName": ch.sms.api_key.name,
                                "items": [{"key": ch.sms.api_key.key, "path": names.SMS_KEY_FILE}],
                                "defaultMode": 0o444,
                            },
                        },
                        {
                            "name": "signing-key",
                            "secret": {
                                "secretName": names.signing_key_secret_name(ch.name),
                                "items": [
                                    {"key": names.SIGNING_KEY_SECRET_KEY, "path": names.SIGNING_KEY_SECRET_KEY}
                                ],
                                "defaultMode": 0o444,
                            },
                        },
                        {
                            # optional: receipts are not needed to send; the relay picks the
                            # file up when it appears
                            "name": "receipt-token",
                            "secret": {
                                "secretName": names.receipt_token_secret_name(ch.name),
                                "items": [{"key": names.RECEIPT_TOKEN_SECRET_KEY,
                                           "path": names.RECEIPT_TOKEN_SECRET_KEY}],
                                "defaultMode": 0o444,
                                "optional": True,
                            },
                        },
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                        *_log_token_volumes(ch),
                        *_state_store_volumes(ch),
                    ],
                },
            },
        },
    }
    podtemplate.apply(deployment["spec"]["template"], ch.relay.pod_template)
    return deployment


def _log_token_volumes(ch: ChannelSpec) -> list[dict[str, Any]]:
    if ch.conversion is None:
        return []
    return [{"name": "log-stream-token", "secret": {
        "secretName": names.log_stream_token_secret_name(ch.name),
        "items": [{"key": names.LOG_TOKEN_SECRET_KEY, "path": names.LOG_TOKEN_SECRET_KEY}],
        "defaultMode": 0o444,
    }}]


def _state_store_volumes(ch: ChannelSpec) -> list[dict[str, Any]]:
    """The store's password (a Secret) and CA bundle (a ConfigMap), as the relay reads them."""
    store = ch.relay.state_store
    volumes: list[dict[str, Any]] = []
    if store and store.password:
        volumes.append({"name": "state-password", "secret": {
            "secretName": store.password.name,
            "items": [{"key": store.password.key, "path": names.STATE_PASSWORD_FILE}],
            "defaultMode": 0o444,
        }})
    if store and store.ca:
        volumes.append({"name": "state-ca", "configMap": {
            "name": store.ca.name,
            "items": [{"key": store.ca.key, "path": names.STATE_CA_FILE}],
            "defaultMode": 0o444,
        }})
    return volumes


def relay_service(ch: ChannelSpec, owner: Mapping[str, Any]) -> dict[str, Any]:
    """Port ``http`` reaches only the public listener (``/v1/messages``); port ``metrics`` the
    admin listener, for a ServiceMonitor; the Ingress routes to ``http`` only."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(ch.name),
            "ports": [
                {"name": "http", "port": names.SERVICE_PORT, "targetPort": names.RELAY_PORT_NAME, "protocol": "TCP"},
                {"name": names.RELAY_ADMIN_PORT_NAME, "port": names.RELAY_ADMIN_PORT,
                 "targetPort": names.RELAY_ADMIN_PORT_NAME, "protocol": "TCP"},
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
                        _relay_path(ch, names.RELAY_PUBLIC_PATH, "Exact"),
                        # Prefix: the token follows; an Exact path would put it in the Ingress
                        _relay_path(ch, names.RELAY_RECEIPT_PATH, "Prefix"),
                        # spec.conversion: Auth0's log stream posts to <path>/v1/auth0-logs
                        *([_relay_path(ch, names.RELAY_AUTH0_LOGS_PATH, "Exact")] if ch.conversion is not None else []),
                    ]
                },
            }
        ]
    }
    if ingress.class_name:
        spec["ingressClassName"] = ingress.class_name
    if ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
    metadata = _metadata(ch, names.relay_name(ch.name), owner)
    if ingress.annotations:
        metadata["annotations"] = dict(ingress.annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec}


def _relay_path(ch: ChannelSpec, path: str, path_type: str) -> dict[str, Any]:
    """An Ingress path (under the channel's path prefix) to the relay's public port."""
    return {"path": ch.relay.path_prefix + path, "pathType": path_type,
            "backend": {"service": {"name": names.relay_name(ch.name), "port": {"name": "http"}}}}


def relay_network_policy(ch: ChannelSpec, deployment: Mapping[str, Any], owner: Mapping[str, Any],
                         egress: RelayEgress = RelayEgress()) -> dict[str, Any]:
    """Ingress: the public port from anywhere (ingress controllers, load balancers), every other
    container port (probes/metrics) only from the channel's namespace and namespaces labelled
    for scraping. Egress (see ``egress``): DNS only to the cluster's DNS pods; HTTPS only to
    addresses outside the cluster's ranges (8x8); an administrator-allowed ``spec.sms.baseUrl``
    on another host and the state store only on their own port (to any address: they are often
    in the cluster, and a NetworkPolicy cannot name a host)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = [p for p in container["ports"] if p["name"] != names.RELAY_PORT_NAME]
    ingress: list[dict[str, Any]] = [{"ports": [{"port": names.RELAY_PORT_NAME, "protocol": "TCP"}]}]
    if ports:
        ingress.append({
            "ports": [{"port": p["name"], "protocol": p.get("protocol", "TCP")} for p in ports],
            "from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchLabels": {
                    names.LABEL_RELAY_METRICS_NAMESPACE: names.RELAY_METRICS_NAMESPACE_VALUE}}},
            ],
        })
    rules: list[dict[str, Any]] = [
        {"to": [egress.dns_peer()],
         "ports": [{"port": port, "protocol": protocol} for port in egress.dns_ports for protocol in ("UDP", "TCP")]},
    ]
    if egress.https == "outside-cluster":
        rules.append({"to": egress.outside_cluster(), "ports": [{"port": 443, "protocol": "TCP"}]})
    own_ports = set()
    if ch.sms.base_url and not endpoints.is_8x8_base_url(ch.sms.base_url):
        own_ports.add(urlsplit(ch.sms.base_url).port or 443)
    if ch.relay.state_store is not None:
        own_ports.add(ch.relay.state_store.port)
    if own_ports:
        rules.append({"ports": [{"port": port, "protocol": "TCP"} for port in sorted(own_ports)]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(ch, names.relay_name(ch.name), owner),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(ch.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": rules,
        },
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
    receipt_tokens: tuple[tuple[str, ...], str] | None = None,
    egress: RelayEgress = RelayEgress(),
    log_stream_tokens: tuple[tuple[str, ...], str] | None = None,
) -> Children:
    """``receipt_tokens``, ``log_stream_tokens``: (tokens, rotation request handled), see
    ``RotatingTokens.plan``. The log stream's Secret is applied only with spec.conversion; without
    it, ``log_stream_tokens`` given (the Secret exists) deletes it."""
    deployment = relay_deployment(ch, image, secrets_checksum, owner)
    apply: list[dict[str, Any]] = [
        signing_key_secret(ch, signing_keys, owner),
        deployment,
        relay_service(ch, owner),
        relay_network_policy(ch, deployment, owner, egress),
    ]
    if receipt_tokens is not None:
        apply.append(receipt_token_secret(ch, *receipt_tokens, owner))
    delete: list[ChildRef] = []
    if ch.conversion is not None and log_stream_tokens is not None:
        apply.append(log_stream_token_secret(ch, *log_stream_tokens, owner))
    elif ch.conversion is None and log_stream_tokens is not None:
        delete.append(ChildRef(names.SECRET.api_version, names.SECRET.kind, ch.namespace,
                               names.log_stream_token_secret_name(ch.name)))
    name = names.relay_name(ch.name)
    for manifest, child in ((relay_ingress(ch, owner), names.INGRESS), (relay_pdb(ch, owner), names.POD_DISRUPTION_BUDGET)):
        if manifest is None:
            delete.append(ChildRef(child.api_version, child.kind, ch.namespace, name))
        else:
            apply.append(manifest)
    return Children(tuple(apply), tuple(delete))


def service_url(ch: ChannelSpec) -> str:
    return f"http://{names.relay_name(ch.name)}.{ch.namespace}.svc:{names.SERVICE_PORT}"


@dataclass(frozen=True)
class Rollout:
    """The relay Deployment's rollout as relay_rollout reads it."""

    rolled_out: bool  # available and fully rolled out with this checksum
    available: int  # available replicas
    message: str


def relay_rollout(deployment: Mapping[str, Any] | None, secrets_checksum: str) -> Rollout:
    if deployment is None:
        return Rollout(False, 0, "relay Deployment not created yet")
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    annotations = (((spec.get("template") or {}).get("metadata") or {}).get("annotations")) or {}
    if annotations.get(names.ANNOTATION_SECRETS_CHECKSUM) != secrets_checksum:
        return Rollout(False, available, "relay Deployment not yet updated")
    if int(status.get("observedGeneration") or 0) < int((deployment.get("metadata") or {}).get("generation") or 0):
        return Rollout(False, available, "relay rollout pending")
    if wanted == 0:
        return Rollout(False, 0, "relay scaled to 0 replicas")
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if updated < wanted or total > updated:
        return Rollout(False, available, f"relay rollout in progress: {updated}/{wanted} replicas updated")
    if (conditions.get("Available") or {}).get("status") != "True" or available < wanted:
        return Rollout(False, available, f"waiting for relay replicas: {available}/{wanted} available")
    return Rollout(True, available, f"{available}/{wanted} relay replicas available")
