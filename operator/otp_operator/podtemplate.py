"""``spec.relay.podTemplate``: the user's additions to the relay pods, layered onto the pod
template render.py makes. The operator's labels (the Deployment's selector), its checksum
annotation, the relay's command, probes, env and security settings are never overridden."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from . import names

# podTemplate.spec field -> the same field of the pod spec, copied as written.
POD_SPEC_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets")


def image(pod_template: Mapping[str, Any]) -> str:
    """The relay image the channel asks for ('' = the operator's own)."""
    return str(((pod_template.get("spec") or {}).get("container") or {}).get("image") or "")


def apply(template: dict[str, Any], pod_template: Mapping[str, Any]) -> None:
    """Layer ``pod_template`` onto a Deployment's ``spec.template`` (in place)."""
    meta = pod_template.get("metadata") or {}
    spec = pod_template.get("spec") or {}
    metadata = template["metadata"]
    metadata["labels"] = {**(meta.get("labels") or {}), **metadata["labels"]}
    metadata["annotations"] = {**(meta.get("annotations") or {}), **metadata.get("annotations", {})}
    pod = template["spec"]
    for key in POD_SPEC_FIELDS:
        if spec.get(key):
            pod[key] = copy.deepcopy(spec[key])
    container_spec = spec.get("container") or {}
    (container,) = [c for c in pod["containers"] if c["name"] == names.RELAY_CONTAINER]
    if image(pod_template):
        container["image"] = image(pod_template)
    resources = {kind: dict(values) for kind, values in (container_spec.get("resources") or {}).items() if values}
    if resources:
        container["resources"] = resources
