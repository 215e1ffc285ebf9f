"""The one place for every name the operator puts on the cluster or in Auth0."""

from __future__ import annotations

from importlib import metadata

GROUP = "otprelay.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OtpChannel"
PLURAL = "otpchannels"

FIELD_MANAGER = "otp-relay-operator"
OPERATOR_NAME = "otp-relay-operator"

# Labels on every child; the selector labels never change for the life of a channel.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CHANNEL = f"{GROUP}/channel"
RELAY_APP_NAME = "otp-relay"

# Annotations.
ANNOTATION_ROTATE_SIGNING_KEY = f"{GROUP}/rotate-signing-key"
ANNOTATION_SECRETS_CHECKSUM = f"{GROUP}/secrets-checksum"
ANNOTATION_PREFIX_KOPF = GROUP  # kopf's progress/diff-base annotations live under our group
# Set on a channel being deleted: finish without removing the Auth0 side (it stays as it is).
ANNOTATION_ABANDON_CLEANUP = f"{GROUP}/abandon-cleanup"

# On an Auth0 credentials Secret while a channel's deletion may still need it (like Kubernetes'
# own pvc-protection): deleting the Secret (or its namespace) waits until the cleanup is done.
FINALIZER_CREDENTIALS_IN_USE = f"{GROUP}/auth0-credentials-in-use"

# Relay container contract.
RELAY_CONTAINER = "relay"
RELAY_COMMAND = "otp-relay"
RELAY_PORT = 8080
RELAY_PORT_NAME = "http"
SERVICE_PORT = 80
SMS_KEY_MOUNT_DIR = "/var/run/otp-relay/sms"
SMS_KEY_FILE = "apikey"
SIGNING_KEY_MOUNT_DIR = "/var/run/otp-relay/signing"
SIGNING_KEY_SECRET_KEY = "keys"  # the data key in the signing-key Secret; one key per line
SIGNING_KEY_BYTES = 32
RELAY_RUN_AS_USER = 65532

DEFAULT_DRIFT_INTERVAL_SECONDS = 600.0
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


def selector_labels(channel: str) -> dict[str, str]:
    return {LABEL_NAME: RELAY_APP_NAME, LABEL_INSTANCE: channel}


def child_labels(channel: str) -> dict[str, str]:
    return {
        **selector_labels(channel),
        LABEL_COMPONENT: "relay",
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_CHANNEL: channel,
    }
