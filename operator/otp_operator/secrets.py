"""Resolving the Secrets a channel references, and the checksum that rolls the relay on change.

Pure: the caller fetches the Secret objects; nothing here talks to the API server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .spec import SecretKeyRef

SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_MISSING = "SecretKeyMissing"
SECRET_NOT_ALLOWED = "SecretNotAllowed"


def watched(secret: Mapping[str, Any] | None) -> bool:
    """Whether the operator's label-selected watch reports this Secret's changes (secret_watch)."""
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(names.LABEL_SECRET) in (names.SECRET_REFERENCED, names.SECRET_RELAY)


class SecretProblem(Exception):
    """A referenced Secret or key is missing; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ResolvedSecrets:
    """Values read from referenced Secrets. ``repr`` never shows them."""

    sms_api_key: str
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return "ResolvedSecrets(<redacted>)"


def secret_value(secret: Mapping[str, Any] | None, ref: SecretKeyRef, namespace: str) -> str:
    """The decoded value of ``ref`` from a fetched Secret (or None when it does not exist)."""
    if secret is None:
        raise SecretProblem(SECRET_NOT_FOUND, f"Secret {namespace}/{ref.name} not found")
    data = secret.get("data") or {}
    encoded = data.get(ref.key)
    if encoded is None:
        raise SecretProblem(SECRET_KEY_MISSING, f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
    try:
        value = base64.b64decode(encoded, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretProblem(
            SECRET_KEY_MISSING, f"Secret {namespace}/{ref.name} key {ref.key!r} is not UTF-8 text"
        ) from None
    if not value:
        raise SecretProblem(SECRET_KEY_MISSING, f"Secret {namespace}/{ref.name} key {ref.key!r} is empty")
    return value


def check_state_password(metadata: Mapping[str, Any] | None, ref: SecretKeyRef, namespace: str) -> None:
    """The state store's password Secret must carry the opt-in label. ``metadata``: the
    Secret's metadata only (the operator never reads this Secret's data), None when missing."""
    if metadata is None:
        raise SecretProblem(SECRET_NOT_FOUND, f"Secret {namespace}/{ref.name} not found")
    labels = metadata.get("labels") or {}
    if labels.get(names.LABEL_STATE_STORE_PASSWORD) != names.STATE_STORE_PASSWORD_ALLOWED:
        raise SecretProblem(
            SECRET_NOT_ALLOWED,
            f"spec.relay.stateStore.passwordSecretRef names Secret {namespace}/{ref.name}, which is not "
            f"labelled {names.LABEL_STATE_STORE_PASSWORD}={names.STATE_STORE_PASSWORD_ALLOWED}: only a Secret "
            "someone who may edit the namespace's Secrets has so labelled is sent to the state store")


def checksum(parts: Mapping[str, str]) -> str:
    """A stable digest of the relay's secret inputs (names and values), for a pod annotation.

    The inputs are high-entropy keys, so a digest reveals nothing usable; it changes whenever
    any value changes, which is what rolls the pods.
    """
    digest = hashlib.sha256()
    for label in sorted(parts):
        digest.update(label.encode())
        digest.update(b"\0")
        digest.update(parts[label].encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def new_signing_key() -> str:
    """A fresh random signing key: 32 bytes, URL-safe text (the relay uses the line as UTF-8)."""
    return _random.token_urlsafe(names.SIGNING_KEY_BYTES)


def signing_keys(secret: Mapping[str, Any] | None) -> list[str]:
    """The keys in the operator's signing-key Secret, oldest first; [] when absent or empty."""
    if secret is None:
        return []
    encoded = (secret.get("data") or {}).get(names.SIGNING_KEY_SECRET_KEY)
    if not encoded:
        return []
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]
