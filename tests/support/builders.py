"""Builders of what tests start from: channel specs and objects, a pod template, an owner
reference (cert-manager's test/unit/gen is the model). Each returns a fresh copy to change."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from otp_operator import names, render

GROUP, VERSION, PLURAL = names.GROUP, names.VERSION, names.PLURAL
EXAMPLE_CHANNEL = Path(__file__).resolve().parents[2] / "examples" / "otpchannel.yaml"

# A typical channel's spec (ingress, two replicas, a recipient window), as the pure tests use it.
SHOP_SPEC: dict[str, Any] = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0-mgmt"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}, "sender": "ShopOTP"},
    "policy": {"allowedCountries": ["SG", "MY"], "perRecipient": {"limit": 3, "window": "1h"}},
    "relay": {
        "replicas": 2,
        "publicUrl": "https://otp.shop.example/prod/",
        "ingress": {"className": "nginx", "host": "otp.shop.example", "tlsSecretName": "otp-tls"},
    },
}
OWNER = render.owner_reference("uid-1", "prod")

# A podTemplate using every field the operator lets a user set.
POD_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "payments"}, "annotations": {"example.com/owner": "payments"}},
    "spec": {
        "nodeSelector": {"kubernetes.io/hostname": "node-a"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "otp", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "priorityClassName": "otp-critical",
        "imagePullSecrets": [{"name": "registry"}],
        "container": {"image": "registry.example/otp-relay-operator:9.9.9",
                      "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "96Mi"}}},
    },
}



def shop_spec(**relay_overrides: Any) -> dict[str, Any]:
    """``SHOP_SPEC`` (a copy), its relay section updated with ``relay_overrides``."""
    spec = copy.deepcopy(SHOP_SPEC)
    spec["relay"].update(relay_overrides)
    return spec


def minimal_channel(namespace: str, name: str = "minimal") -> dict:
    """Only what the CRD requires."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OtpChannel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "auth0": {"domain": "tenant.eu.auth0.com", "credentialsSecretRef": {"name": "auth0"}},
            "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
            "relay": {"publicUrl": "https://otp.example.com/prod"},
        },
    }



def example_channel(namespace: str, name: str = "prod") -> dict[str, Any]:
    """The README's example channel (examples/otpchannel.yaml), named ``namespace/name``."""
    body = yaml.safe_load(EXAMPLE_CHANNEL.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    return body
