"""A kubeconfig that authenticates as a ServiceAccount, with a token from the TokenRequest API."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client


def service_account_token(api: client.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
    response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return response.status.token


def service_account_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster (server and CA) with the ServiceAccount's token as the user."""
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "sandbox", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
