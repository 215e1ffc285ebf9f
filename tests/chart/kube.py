"""Small Kubernetes helpers for the chart tests (admin client)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "otp-chart-tests"


def server_side_apply(api: client.ApiClient, body: dict, *, dry_run: bool) -> dict:
    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])
    kwargs = {"dry_run": "All"} if dry_run else {}
    result = resource.server_side_apply(
        body=body, namespace=body["metadata"].get("namespace"), field_manager=FIELD_MANAGER,
        force_conflicts=True, **kwargs,
    )
    return result.to_dict()


def deployment_available(api: client.ApiClient, namespace: str, name: str, replicas: int) -> bool:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    conditions = {c.type: c.status for c in deployment.status.conditions or []}
    return (
        conditions.get("Available") == "True"
        and (deployment.status.available_replicas or 0) == replicas
        and deployment.status.observed_generation == deployment.metadata.generation
        and (deployment.status.updated_replicas or 0) == replicas
    )


def exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@contextmanager
def extra_namespaces(api: client.ApiClient, count: int) -> Iterator[list[str]]:
    """``count`` fresh namespaces, deleted afterwards."""
    core = client.CoreV1Api(api)
    names = [f"t-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    created: list[str] = []
    try:
        for name in names:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
            created.append(name)
        yield names
    finally:
        for name in created:
            core.delete_namespace(name)


CHART_CRDS = ("otpchannels.otprelay.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev")


def adopt_crds(api: client.ApiClient, release: str, namespace: str) -> None:
    """README's upgrade step: let ``release`` take over CRDs created outside it (by ``crds/``, by an
    earlier chart version or by another test's release), as Helm requires before it manages them."""
    extensions = client.ApiextensionsV1Api(api)
    patch = {"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
    }}
    for name in CHART_CRDS:
        if exists(lambda n=name: extensions.read_custom_resource_definition(n)):
            extensions.patch_custom_resource_definition(name, patch)
