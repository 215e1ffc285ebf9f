"""Install the OtpChannel CRD from ``crds/`` (the one source) into a cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "otpchannels.otprelay.io.yaml"


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def install_crd(api: client.ApiClient, timeout: float = 30.0, path: Path = CRD_PATH) -> dict[str, Any]:
    """Create or replace the CRD (the OtpChannel one unless ``path`` names another) and wait until
    it is Established; returns the live object."""
    ext = client.ApiextensionsV1Api(api)
    body = load_crd(path)
    name = body["metadata"]["name"]
    try:
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        ext.create_custom_resource_definition(body)
    deadline = time.monotonic() + timeout
    while True:
        crd = ext.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True":
            install_admission_warnings(api)
            return api.sanitize_for_serialization(crd)
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRD {name} not Established after {timeout:.0f}s: {conditions}")
        time.sleep(0.2)


LEGACY_HOOK_POLICY_PATH = (Path(__file__).resolve().parents[2] / "charts" / "otp-relay-operator"
                           / "templates" / "legacy-hook-warning.yaml")
_FULLNAME = '{{ include "otp-relay-operator.fullname" . }}'


def admission_warnings(name_prefix: str = "otp-relay-sandbox") -> list[dict[str, Any]]:
    """The chart's legacy-hook ValidatingAdmissionPolicy and its binding (Warn only)."""
    text = LEGACY_HOOK_POLICY_PATH.read_text()
    text = text[text.index("-}}") + 3:].replace(_FULLNAME, name_prefix)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def install_admission_warnings(api: client.ApiClient) -> None:
    """Create or replace the admission policies that warn about end-of-life settings."""
    admission = client.AdmissionregistrationV1Api(api)
    for body in admission_warnings():
        kind, name = body["kind"], body["metadata"]["name"]
        create, read, replace = {
            "ValidatingAdmissionPolicy": (
                admission.create_validating_admission_policy,
                admission.read_validating_admission_policy,
                admission.replace_validating_admission_policy),
            "ValidatingAdmissionPolicyBinding": (
                admission.create_validating_admission_policy_binding,
                admission.read_validating_admission_policy_binding,
                admission.replace_validating_admission_policy_binding),
        }[kind]
        try:
            body["metadata"]["resourceVersion"] = read(name).metadata.resource_version
            replace(name, body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body["metadata"].pop("resourceVersion", None)
            create(body)
