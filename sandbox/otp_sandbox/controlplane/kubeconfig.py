"""Kubeconfig documents with embedded credentials (self-contained files, no path references)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import yaml

CLUSTER_NAME = "otp-sandbox"


def render(
    server: str,
    ca_pem: bytes,
    user: str,
    cert_pem: bytes,
    key_pem: bytes,
    impersonate: str | None = None,
    impersonate_groups: Sequence[str] = (),
) -> str:
    credentials: dict[str, object] = {
        "client-certificate-data": _b64(cert_pem),
        "client-key-data": _b64(key_pem),
    }
    if impersonate is not None:
        credentials["as"] = impersonate
        credentials["as-groups"] = list(impersonate_groups)
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": user,
    }
    return yaml.safe_dump(document, sort_keys=False)


def with_client_certificate(kubeconfig: str, user: str, cert_pem: bytes, key_pem: bytes) -> str:
    """``kubeconfig`` (its current context's cluster kept as is) authenticating as ``user`` with
    the given client certificate instead of its own credentials."""
    document = yaml.safe_load(kubeconfig)
    context_name = document["current-context"]
    context = next(c["context"] for c in document["contexts"] if c["name"] == context_name)
    cluster = next(c for c in document["clusters"] if c["name"] == context["cluster"])
    document.update({
        "clusters": [cluster],
        "users": [{"name": user, "user": {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    })
    return yaml.safe_dump(document, sort_keys=False)


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` readable by the owner only (it holds a private key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
