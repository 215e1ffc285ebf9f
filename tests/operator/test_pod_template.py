"""spec.relay.podTemplate rendered into the relay Deployment (pure, like test_pure.py)."""

from __future__ import annotations

import copy

from otp_operator import names, render
from otp_operator.spec import parse_channel
from tests.operator.test_pure import OWNER, SPEC

TEMPLATE = {
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


def deployment(pod_template=None, **relay):
    spec = copy.deepcopy(SPEC)
    spec["relay"].update(relay)
    if pod_template is not None:
        spec["relay"]["podTemplate"] = pod_template
    return render.relay_deployment(parse_channel("shop", "prod", spec), "default/image:1", "sum", OWNER)


def test_pod_template_reaches_the_pod_spec_and_container():
    template = deployment(TEMPLATE)["spec"]["template"]
    pod = template["spec"]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == TEMPLATE["spec"][key], key
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/otp-relay-operator:9.9.9"
    assert container["resources"] == TEMPLATE["spec"]["container"]["resources"]
    assert template["metadata"]["labels"]["team"] == "payments"
    assert template["metadata"]["annotations"]["example.com/owner"] == "payments"


def test_without_pod_template_nothing_is_added():
    plain = deployment()
    pod = plain["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"} & set(pod)
    assert pod["containers"][0]["image"] == "default/image:1"
    assert pod["containers"][0]["resources"] == render.DEFAULT_RESOURCES
    assert deployment({}) == plain


def test_the_operators_labels_annotations_and_security_win():
    hostile = {"metadata": {"labels": {**names.child_labels("prod"), "app.kubernetes.io/name": "other"},
                            "annotations": {names.ANNOTATION_SECRETS_CHECKSUM: "forged"}},
               "spec": {"container": {"image": "x/y:1"}}}
    rendered = deployment(hostile)
    template = rendered["spec"]["template"]
    assert template["metadata"]["labels"] == names.child_labels("prod")
    assert template["metadata"]["annotations"][names.ANNOTATION_SECRETS_CHECKSUM] == "sum"
    plain = deployment()["spec"]["template"]["spec"]["containers"][0]
    container = template["spec"]["containers"][0]
    for key in ("command", "env", "securityContext", "readinessProbe", "livenessProbe", "volumeMounts"):
        assert container[key] == plain[key], key
    assert template["spec"]["securityContext"] == deployment()["spec"]["template"]["spec"]["securityContext"]


def test_template_resources_replace_relay_resources():
    rendered = deployment({"spec": {"container": {"resources": {"limits": {"cpu": "2"}}}}},
                          resources={"limits": {"cpu": "1"}})
    assert rendered["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
