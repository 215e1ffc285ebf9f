"""The chart against the real API server: every object admitted, install, upgrade, uninstall."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from otp_sandbox.crd import install_crd

from tests.chart.helm import CHART_DIR, REPO_ROOT, Helm, HelmError, set_values
from tests.chart.kube import CHART_CRDS, adopt_crds, deployment_available, exists, extra_namespaces, server_side_apply
from tests.support.builders import example_channel
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

# Served only where the Prometheus Operator is installed; checked by test_chart_render instead.
NOT_SERVED_HERE = {"ServiceMonitor"}
CRD_NAMES = CHART_CRDS


def unique_release() -> str:
    return f"otp-{uuid.uuid4().hex[:8]}"


def install_chart_crds(api: client.ApiClient) -> None:
    """What `helm install` does first: create the CRDs in crds/ (so their objects can be checked)."""
    for path in sorted((CHART_DIR / "files" / "crds").glob("*.yaml")):
        server_side_apply(api, yaml.safe_load(path.read_text()), dry_run=False)
    extensions = client.ApiextensionsV1Api(api)
    for name in CRD_NAMES:
        wait_for(lambda n=name: any(
            c.type == "Established" and c.status == "True"
            for c in extensions.read_custom_resource_definition(n).status.conditions or []
        ), timeout=30, what=f"CRD {name} Established")


@pytest.mark.parametrize(
    "values",
    [{}, {"replicas": 2, "networkPolicy.enabled": True, "metrics.serviceMonitor.enabled": True}, "namespaced"],
    ids=["default", "replicated", "namespaced"],
)
def test_every_rendered_object_is_accepted_by_the_api_server(
    helm: Helm, k8s_api: client.ApiClient, namespace: str, values: dict | str
) -> None:
    install_chart_crds(k8s_api)
    with extra_namespaces(k8s_api, 2) as watched:
        if values == "namespaced":
            values = {"replicas": 3, "watchNamespaces": watched, "networkPolicy.enabled": True}
        release = unique_release()
        objects = helm.template(*set_values({"peering.name": release, **values}), release=release, namespace=namespace)
        checked = []
        for body in objects:
            if body["kind"] in NOT_SERVED_HERE:
                continue
            result = server_side_apply(k8s_api, body, dry_run=True)
            assert result["kind"] == body["kind"] and result["metadata"]["name"] == body["metadata"]["name"]
            checked.append(body["kind"])
    assert {"Deployment", "Service", "ServiceAccount", "CustomResourceDefinition", "ClusterRole"} <= set(checked)
    if values.get("replicas", 1) > 1:
        assert "PodDisruptionBudget" in checked
    assert {"ClusterRole", "Role"} & set(checked)


def chart_with_crd_description(tmp_path: Path, description: str) -> Path:
    """A copy of the chart (links resolved) whose OtpChannel CRD differs: a newer chart version."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart, symlinks=False)
    path = chart / "files" / "crds" / "otpchannels.otprelay.io.yaml"
    crd = yaml.safe_load(path.read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = description
    path.write_text(yaml.safe_dump(crd))
    return chart


def live_crd_description(extensions: client.ApiextensionsV1Api) -> str:
    crd = extensions.read_custom_resource_definition("otpchannels.otprelay.io")
    return crd.spec.versions[0].schema.open_apiv3_schema.description


def test_install_upgrade_uninstall_keeps_the_crd_and_channels(
    cluster_helm: Helm, k8s_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    release = unique_release()
    deployment_name = f"{release}-otp-relay-operator"
    apps, rbac = client.AppsV1Api(k8s_api), client.RbacAuthorizationV1Api(k8s_api)
    custom, extensions = client.CustomObjectsApi(k8s_api), client.ApiextensionsV1Api(k8s_api)
    common = ["--namespace", namespace, "--wait", "--timeout", "180s"]
    installed = True  # from the first call on: a failed `install --wait` leaves a release behind
    newer_chart = chart_with_crd_description(tmp_path, f"newer CRD {release}")
    original_description = yaml.safe_load((REPO_ROOT / "crds" / "otpchannels.otprelay.io.yaml").read_text())[
        "spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
    try:
        # The CRDs exist already (other tests, or an earlier chart version): README's adoption step.
        adopt_crds(k8s_api, release, namespace)
        output = cluster_helm.run("install", release, str(CHART_DIR), *common, *set_values({"peering.name": release}))
        notes = output.split("NOTES:", 1)[1]  # NOTES.txt: how to check it and the next step
        assert f"kubectl --namespace {namespace} rollout status deployment/{deployment_name}" in notes
        assert "create secret generic auth0-mgmt" in notes and "create secret generic eightbyeight" in notes
        assert "get otpch" in notes and "every namespace" in notes
        wait_for(lambda: deployment_available(k8s_api, namespace, deployment_name, 1), 120, 0.5,
                 what="operator Deployment Available")
        for name in CRD_NAMES:
            assert exists(lambda n=name: extensions.read_custom_resource_definition(n))
        assert exists(lambda: rbac.read_cluster_role(deployment_name))

        assert live_crd_description(extensions) == original_description

        # Upgrade to a newer chart (its CRD differs) with changed values: two replicas with peering,
        # another drift interval. Helm updates the CRD.
        cluster_helm.run(
            "upgrade", release, str(newer_chart), *common,
            *set_values({"peering.name": release, "replicas": 2, "driftIntervalSeconds": 120}),
        )
        assert live_crd_description(extensions) == f"newer CRD {release}"
        wait_for(lambda: deployment_available(k8s_api, namespace, deployment_name, 2), 120, 0.5,
                 what="operator Deployment Available with 2 replicas")
        args = apps.read_namespaced_deployment(deployment_name, namespace).spec.template.spec.containers[0].args
        assert f"--peering={release}" in args and "--drift-interval=120" in args
        assert exists(lambda: custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release))

        # And back to one standalone replica: the peering object goes, the flag too; the CRD as in crds/.
        cluster_helm.run("upgrade", release, str(CHART_DIR), *common, *set_values({"peering.name": release}))
        assert live_crd_description(extensions) == original_description
        wait_for(lambda: deployment_available(k8s_api, namespace, deployment_name, 1), 120, 0.5,
                 what="operator Deployment Available with 1 replica")
        args = apps.read_namespaced_deployment(deployment_name, namespace).spec.template.spec.containers[0].args
        assert not any(a.startswith("--peering") for a in args)
        assert not exists(lambda: custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release))

        # A user's channel exists when the chart goes away.
        custom.create_namespaced_custom_object("otprelay.io", "v1alpha1", namespace, "otpchannels", example_channel(namespace, "kept"))

        cluster_helm.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
        installed = False
        assert not exists(lambda: apps.read_namespaced_deployment(deployment_name, namespace))
        assert not exists(lambda: rbac.read_cluster_role(deployment_name))
        assert not exists(lambda: custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release))
        for name in CRD_NAMES:
            assert exists(lambda n=name: extensions.read_custom_resource_definition(n)), f"uninstall removed CRD {name}"
        kept = custom.get_namespaced_custom_object("otprelay.io", "v1alpha1", namespace, "otpchannels", "kept")
        assert kept["spec"]["sms"]["subaccountId"] == "shop_otp"
    finally:
        if installed:
            cluster_helm.uninstall(release, namespace)
        if exists(lambda: custom.get_namespaced_custom_object("otprelay.io", "v1alpha1", namespace, "otpchannels", "kept")):
            custom.delete_namespaced_custom_object("otprelay.io", "v1alpha1", namespace, "otpchannels", "kept")
        install_crd(k8s_api)  # the session's CRD exactly as in crds/, whichever step failed


def test_install_refuses_bad_values_before_touching_the_cluster(cluster_helm: Helm, k8s_api: client.ApiClient, namespace: str) -> None:
    release = unique_release()
    with pytest.raises(HelmError) as error:
        cluster_helm.run("install", release, str(CHART_DIR), "--namespace", namespace, *set_values({"watchNamespaces": ["Bad_NS"]}))
    assert "watchNamespaces" in error.value.output
    assert not client.CoreV1Api(k8s_api).list_namespaced_secret(namespace, label_selector=f"name={release}").items
