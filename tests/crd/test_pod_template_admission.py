"""spec.relay.podTemplate against the real API server: a full template is stored as written,
bad ones are rejected naming the field."""

from __future__ import annotations

import copy

import pytest
from kubernetes.client.rest import ApiException

from tests.support.builders import POD_TEMPLATE as TEMPLATE
from tests.support.builders import minimal_channel
from tests.support.channels import create_channel

pytestmark = pytest.mark.cluster


def with_template(namespace: str, template: dict, name: str = "templated") -> dict:
    body = minimal_channel(namespace, name=name)
    body["spec"]["relay"]["podTemplate"] = template
    return body


def test_full_pod_template_is_stored_as_written(k8s_api, otpchannel_crd, namespace: str) -> None:
    stored = create_channel(k8s_api, with_template(namespace, TEMPLATE))
    assert stored["spec"]["relay"]["podTemplate"] == TEMPLATE


def test_fields_outside_the_schema_are_dropped(k8s_api, otpchannel_crd, namespace: str) -> None:
    """Only the listed fields exist: a command, privileged mode or host network never reach the pod."""
    template = {"spec": {"hostNetwork": True, "container": {"image": "r/i:1", "command": ["sh"],
                                                             "securityContext": {"privileged": True}}}}
    stored = create_channel(k8s_api, with_template(namespace, template))
    assert stored["spec"]["relay"]["podTemplate"] == {"spec": {"container": {"image": "r/i:1"}}}


def _bad(path: str, value) -> dict:
    template = copy.deepcopy(TEMPLATE)
    *parents, leaf = path.split(".")
    node = template
    for part in parents:
        node = node[part]
    node[leaf] = value
    return template


INVALID = {
    "label value with space": (_bad("metadata.labels", {"team": "pay ments"}), "podTemplate.metadata.labels.team"),
    "label key invalid": (_bad("metadata.labels", {"-team": "x"}), "label keys must be qualified names"),
    "operator's label": (_bad("metadata.labels", {"app.kubernetes.io/instance": "x"}),
                         "app.kubernetes.io/ and otprelay.io/ labels are set by the operator"),
    "operator's annotation": (_bad("metadata.annotations", {"otprelay.io/secrets-checksum": "x"}),
                              "otprelay.io/ annotations are set by the operator"),
    "toleration operator unknown": (_bad("spec.tolerations", [{"key": "a", "operator": "In"}]),
                                    "podTemplate.spec.tolerations[0].operator"),
    "toleration effect unknown": (_bad("spec.tolerations", [{"key": "a", "effect": "NoRun"}]),
                                  "podTemplate.spec.tolerations[0].effect"),
    "exists with value": (_bad("spec.tolerations", [{"key": "a", "operator": "Exists", "value": "b"}]),
                          "a toleration with operator Exists has no value"),
    "priority class invalid": (_bad("spec.priorityClassName", "High_Priority"), "podTemplate.spec.priorityClassName"),
    "pull secret without name": (_bad("spec.imagePullSecrets", [{}]), "podTemplate.spec.imagePullSecrets[0].name"),
    "image with space": (_bad("spec.container.image", "registry/otp relay"), "podTemplate.spec.container.image"),
    "resource quantity invalid": (_bad("spec.container.resources", {"limits": {"cpu": "lots"}}),
                                  "podTemplate.spec.container.resources.limits.cpu"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_bad_pod_template_is_rejected_naming_the_field(k8s_api, otpchannel_crd, namespace: str, case: str) -> None:
    template, expected = INVALID[case]
    with pytest.raises(ApiException) as raised:
        create_channel(k8s_api, with_template(namespace, template, name="bad"))
    assert raised.value.status == 422, raised.value.body
    assert expected in raised.value.body, raised.value.body
