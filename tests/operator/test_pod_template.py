"""spec.relay.podTemplate rendered into the relay Deployment (pure, like test_pure.py)."""

from __future__ import annotations

import copy

from otp_operator import names, render
from otp_operator.spec import parse_channel

from tests.support.builders import OWNER
from tests.support.builders import POD_TEMPLATE as TEMPLATE
from tests.support.builders import SHOP_SPEC as SPEC


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


# Every field a template could use to take over the relay pod (the CRD's schema prunes most of
# them; the renderer must ignore them all the same).
HOSTILE_CONTAINER = {
    "image": "x/y:1", "command": ["sh", "-c", "cat /var/run/otp-relay/*"], "args": ["--insecure"],
    "env": [{"name": "OTP_RELAY_ALLOWED_COUNTRIES", "value": "*"}],
    "securityContext": {"privileged": True, "runAsUser": 0, "readOnlyRootFilesystem": False},
    "readinessProbe": {"exec": {"command": ["true"]}}, "livenessProbe": {"exec": {"command": ["true"]}},
    "volumeMounts": [{"name": "host", "mountPath": "/host"}],
}
HOSTILE_POD_SPEC = {
    "hostNetwork": True, "hostPID": True, "serviceAccountName": "cluster-admin", "automountServiceAccountToken": True,
    "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
    "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
    "initContainers": [{"name": "steal", "image": "x/y:1"}], "containers": [{"name": "sidecar", "image": "x/y:1"}],
}


def test_the_operators_labels_annotations_and_security_win():
    hostile = {"metadata": {"labels": {**names.child_labels("prod"), "app.kubernetes.io/name": "other"},
                            "annotations": {names.ANNOTATION_SECRETS_CHECKSUM: "forged"}},
               "spec": {**HOSTILE_POD_SPEC, "container": HOSTILE_CONTAINER}}
    rendered = deployment(hostile)
    template = rendered["spec"]["template"]
    assert template["metadata"]["labels"] == names.child_labels("prod")
    assert template["metadata"]["annotations"][names.ANNOTATION_SECRETS_CHECKSUM] == "sum"
    plain_pod = deployment()["spec"]["template"]["spec"]
    (plain,) = plain_pod["containers"]
    (container,) = template["spec"]["containers"]
    for key in set(HOSTILE_CONTAINER) - {"image"}:
        assert container.get(key) == plain.get(key), key
    for key in set(HOSTILE_POD_SPEC) - {"containers"}:  # the one container is compared above
        assert template["spec"].get(key) == plain_pod.get(key), key


def test_template_resources_replace_relay_resources():
    rendered = deployment({"spec": {"container": {"resources": {"limits": {"cpu": "2"}}}}},
                          resources={"limits": {"cpu": "1"}})
    assert rendered["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "2"}}
