"""The one place for every name the operator puts on the cluster or in Auth0."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata

GROUP = "otprelay.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OtpChannel"
PLURAL = "otpchannels"
CHANNEL_RESOURCE = (GROUP, VERSION, PLURAL)  # how kopf's decorators name the channels


@dataclass(frozen=True)
class ChildKind:
    """A kind of object the operator makes for a channel."""

    kind: str
    api_version: str  # "v1" (core) or "group/version"
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


SECRET = ChildKind("Secret", "v1", "secrets")
DEPLOYMENT = ChildKind("Deployment", "apps/v1", "deployments")
SERVICE = ChildKind("Service", "v1", "services")
INGRESS = ChildKind("Ingress", "networking.k8s.io/v1", "ingresses")
POD_DISRUPTION_BUDGET = ChildKind("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets")
NETWORK_POLICY = ChildKind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies")
# The one table of a channel's children: each is watched for drift (handlers.py, by the
# operator's label), addressed by its plural (kube.py) and allowed by the chart's RBAC
# (tests/chart/test_rbac_rules.py checks every one). Secrets are watched apart (secret_watch).
WATCHED_CHILDREN = (DEPLOYMENT, SERVICE, INGRESS, POD_DISRUPTION_BUDGET, NETWORK_POLICY)

FIELD_MANAGER = "otp-relay-operator"
OPERATOR_NAME = "otp-relay-operator"

# Labels on every child; the selector labels never change for the life of a channel. No
# app.kubernetes.io/instance: Argo CD tracks its applications' objects by it (and Helm charts set it).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CHANNEL = f"{GROUP}/channel"
RELAY_APP_NAME = "otp-relay"

# Annotations.
ANNOTATION_ROTATE_SIGNING_KEY = f"{GROUP}/rotate-signing-key"
ANNOTATION_SECRETS_CHECKSUM = f"{GROUP}/secrets-checksum"
ANNOTATION_ROTATE_RECEIPT_TOKEN = f"{GROUP}/rotate-receipt-token"
ANNOTATION_ROTATE_LOG_STREAM_TOKEN = f"{GROUP}/rotate-log-stream-token"
ANNOTATION_PREFIX_KOPF = GROUP  # kopf's progress/diff-base annotations live under our group
# Set on a channel being deleted: finish without removing the Auth0 side (it stays as it is).
ANNOTATION_ABANDON_CLEANUP = f"{GROUP}/abandon-cleanup"
# "<key>[,<key>...]" (a country "GB" or a number prefix "+4477"): the conversion blocks to lift,
# once per value of the annotation.
ANNOTATION_LIFT_CONVERSION_BLOCK = f"{GROUP}/lift-conversion-block"

# The operator lists and watches only Secrets with this label (a server-side label selector), never
# the cluster's others: its relay Secrets carry SECRET_RELAY, and a Secret an OtpChannel reads (8x8
# key, Auth0 credentials) gets SECRET_REFERENCED while any channel references it.
LABEL_SECRET = f"{GROUP}/secret"
SECRET_REFERENCED = "referenced"
SECRET_RELAY = "relay"
SECRET_WATCH_SELECTOR = f"{LABEL_SECRET} in ({SECRET_REFERENCED},{SECRET_RELAY})"
# The opt-in a Secret needs before a channel may send it to its state store as the password: set
# by whoever may edit the namespace's Secrets, never by the operator (a channel author could
# otherwise make the relay send any Secret of the namespace to a store).
LABEL_STATE_STORE_PASSWORD = f"{GROUP}/state-store-password"
STATE_STORE_PASSWORD_ALLOWED = "allowed"

# On an Auth0 credentials Secret while a channel's deletion may still need it (like Kubernetes'
# own pvc-protection): deleting the Secret (or its namespace) waits until the cleanup is done.
FINALIZER_CREDENTIALS_IN_USE = f"{GROUP}/auth0-credentials-in-use"

# Relay container contract.
RELAY_CONTAINER = "relay"
RELAY_COMMAND = "otp-relay"
RELAY_PORT = 8080
RELAY_PORT_NAME = "http"
SERVICE_PORT = 80
RELAY_PUBLIC_PATH = "/v1/messages"  # all the public listener serves (and all the Ingress routes)
RELAY_CONVERSION_LIFT_PATH = "/v1/conversion/lift"  # signed like a send; the operator calls it
RELAY_ADMIN_PORT = 9090  # /healthz, /readyz, /metrics
RELAY_ADMIN_PORT_NAME = "metrics"
RELAY_PRESTOP_SECONDS = 5  # endpoints drop the pod before SIGTERM reaches it
RELAY_TERMINATION_GRACE_SECONDS = 35  # preStop + the relay's drain (in-flight sends end within 6 s)
STATE_PASSWORD_MOUNT_DIR = "/var/run/otp-relay/state"
STATE_PASSWORD_FILE = "password"
STATE_CA_MOUNT_DIR = "/var/run/otp-relay/state-ca"
STATE_CA_FILE = "ca.crt"
STATE_CA_DEFAULT_KEY = "ca.crt"  # the key cert-manager's CA injector and trust-manager write
SMS_KEY_MOUNT_DIR = "/var/run/otp-relay/sms"
SMS_KEY_FILE = "apikey"
SIGNING_KEY_MOUNT_DIR = "/var/run/otp-relay/signing"
SIGNING_KEY_SECRET_KEY = "keys"  # the data key in the signing-key Secret; one key per line
SIGNING_KEY_BYTES = 32
# Namespaces with this label (e.g. Prometheus') may reach the relay's non-public ports.
LABEL_RELAY_METRICS_NAMESPACE = f"{GROUP}/relay-metrics"
RELAY_METRICS_NAMESPACE_VALUE = "allowed"
RELAY_RECEIPT_PATH = "/v1/receipts"  # + "/<token>": where 8x8 posts delivery receipts
RELAY_DELIVERY_SUMMARY_PATH = "/v1/delivery-summary"  # on the admin port
RECEIPT_TOKEN_MOUNT_DIR = "/var/run/otp-relay/receipts"
RECEIPT_TOKEN_SECRET_KEY = "tokens"  # one token per line, newest last (the relay accepts each)
RECEIPT_ROTATION_SECRET_KEY = "rotation"  # the rotation request the tokens answer (not mounted)
# spec.conversion: the bearer tokens Auth0's log stream must send (same layout as the receipt tokens)
RELAY_AUTH0_LOGS_PATH = "/v1/auth0-logs"
LOG_TOKEN_MOUNT_DIR = "/var/run/otp-relay/log-stream"
LOG_TOKEN_SECRET_KEY = "tokens"
LOG_ROTATION_SECRET_KEY = "rotation"
# Auth0 log stream names: at most 128 characters (longer ones are shortened with a digest).
AUTH0_LOG_STREAM_NAME_MAX = 128

DEFAULT_DRIFT_INTERVAL_SECONDS = 600.0
DEFAULT_ROTATION_GRACE_SECONDS = 30.0  # the old signing key stays this long after Auth0 has the new one
# A running pod sees a changed Secret at the kubelet's next sync of that pod: every syncFrequency
# (1 m by default) plus up to 50 % jitter (pod_workers' workerResyncIntervalJitterFactor), so up
# to 90 s; the real-node test measures it against this value.
DEFAULT_KEY_PROPAGATION_SECONDS = 90.0
RELAY_IMAGE_ENV = "OTP_OPERATOR_RELAY_IMAGE"
RELAY_IMAGE_REPOSITORY = "ghcr.io/otp-relay-operator/otp-relay-operator"


def package_version() -> str:
    try:
        return metadata.version("otp-relay-operator")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0"


def default_relay_image() -> str:
    return f"{RELAY_IMAGE_REPOSITORY}:{package_version()}"


def owner_of(namespace: str, name: str) -> str:
    """The owner marker written into Auth0 objects: ``namespace/name``."""
    return f"{namespace}/{name}"


def default_auth0_name(namespace: str, name: str) -> str:
    return f"otp-relay-{namespace}-{name}"


def relay_name(channel: str) -> str:
    """Deployment, Service, Ingress and PodDisruptionBudget name (channel names are <= 52 chars)."""
    return f"{channel}-relay"


def signing_key_secret_name(channel: str) -> str:
    return f"{channel}-relay-signing-key"


def receipt_token_secret_name(channel: str) -> str:
    return f"{channel}-relay-receipt-token"


def log_stream_token_secret_name(channel: str) -> str:
    return f"{channel}-log-stream-token"


def log_stream_name(namespace: str, channel: str) -> str:
    """The channel's Auth0 log stream (namespaces <= 63 and channels <= 52 characters fit)."""
    name = f"otp-relay-{namespace}-{channel}"
    if len(name) <= AUTH0_LOG_STREAM_NAME_MAX:
        return name
    return name[:AUTH0_LOG_STREAM_NAME_MAX - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def selector_labels(channel: str) -> dict[str, str]:
    """The relay pods' selector (a subset of what earlier versions put on the pods, so a
    Deployment re-created with it adopts the running pods' ReplicaSet)."""
    return {LABEL_NAME: RELAY_APP_NAME, LABEL_CHANNEL: channel}


def child_labels(channel: str) -> dict[str, str]:
    return {
        **selector_labels(channel),
        LABEL_COMPONENT: "relay",
        LABEL_MANAGED_BY: OPERATOR_NAME,
    }
