"""The operator works with the chart's RBAC and nothing more.

The chart is installed into the cluster; the operator then runs as a local process (kwok does not
run the image) authenticating as the chart's ServiceAccount with a token from the TokenRequest
API, against the API server with RBAC on. It must bring a channel to Ready and clean it up on
delete without a single request refused. test_rbac_rules.py keeps the rules to the allow-list.
"""

from __future__ import annotations

import re
import secrets
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from tests.chart.helm import CHART_DIR, Helm, set_values
from tests.chart.kube import adopt_crds, extra_namespaces
from tests.chart.serviceaccount import service_account_kubeconfig, service_account_token
from tests.fixtures.relay import free_port
from otp_sandbox.processes import OperatorProcess
from tests.operator.conftest import TEST_OPERATOR_ARGS
from tests.operator.support import (channel_manifest, create_channel, delete_channel, get_channel, make_secret,
                                    wait_condition, wait_for)

pytestmark = pytest.mark.cluster

REFUSED = re.compile(r"\b403\b|forbidden|Not enough permissions", re.I)
CLUSTER_SCOPE_OBSERVERS = re.compile(
    r"GET \S+/apis/apiextensions\.k8s\.io/v1/customresourcedefinitions\S* -> APIForbiddenError"
    r"|GET \S+/api/v1/namespaces(\?\S*)? -> APIForbiddenError"
    r"|Not enough permissions to (watch for resources|list namespaces|watch for namespaces)"
)


def authorised_as(api: client.ApiClient, namespace: str, service_account: str, verb: str, resource: str,
                  group: str = "", target_namespace: str | None = None) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{namespace}:{service_account}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, group=group,
                                                        namespace=target_namespace),
    ))
    return client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_operator_brings_a_channel_to_ready_as_the_chart_service_account(
    scope: str, cluster_helm: Helm, k8s_api: client.ApiClient, kubeconfig: Path, namespace: str,
    otpchannel_crd: dict, auth0_tenant, sms_emulator, ssl_cert_file: Path, tmp_path: Path,
) -> None:
    release = f"otp-{uuid.uuid4().hex[:8]}"
    service_account = f"{release}-otp-relay-operator"
    with extra_namespaces(k8s_api, 2) as (channels_ns, other_ns):
        # Cluster-wide also runs with peering (two replicas), so the peering rules are exercised.
        values: dict = {"watchNamespaces": [channels_ns]} if scope == "namespaced" else {"replicas": 2, "peering.name": release}
        operator = None
        try:
            adopt_crds(k8s_api, release, namespace)
            cluster_helm.run("install", release, str(CHART_DIR), "--namespace", namespace, "--wait",
                             "--timeout", "180s", *set_values(values))
            if scope == "namespaced":  # a Role in the watched namespace only
                assert authorised_as(k8s_api, namespace, service_account, "patch", "deployments", "apps", channels_ns)
                assert not authorised_as(k8s_api, namespace, service_account, "get", "secrets", "", other_ns)
            assert not authorised_as(k8s_api, namespace, service_account, "delete", "secrets", "", channels_ns)
            assert not authorised_as(k8s_api, namespace, service_account, "create", "pods", "", channels_ns)

            token = service_account_token(k8s_api, namespace, service_account)
            sa_kubeconfig = service_account_kubeconfig(kubeconfig, token, tmp_path / "operator.kubeconfig")
            scope_args = ("--namespace", channels_ns) if scope == "namespaced" else ("--peering", release)
            operator_args = [*TEST_OPERATOR_ARGS, *scope_args, "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
            if scope == "namespaced":
                operator_args.remove("--all-namespaces")
            operator = OperatorProcess(sa_kubeconfig, ssl_cert_file, tmp_path / "operator.log", operator_args)
            operator.start()

            tenant = auth0_tenant()
            tenant.route_phone_messages_to("phone-provider")
            credentials = tenant.clients[0]
            make_secret(k8s_api, channels_ns, "auth0-mgmt",
                        {"client_id": credentials.client_id, "client_secret": credentials.client_secret})
            subaccount, api_key = f"sub_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24)
            sms_emulator.add_subaccount(subaccount, api_key)
            make_secret(k8s_api, channels_ns, "eightbyeight", {"apikey": api_key})
            manifest = channel_manifest(channels_ns, "prod", domain=tenant.domain,
                                        public_url="https://otp.shop.example/prod",
                                        sms_base_url=sms_emulator.base_url, replicas=2)
            manifest["spec"]["sms"]["subaccountId"] = subaccount
            manifest["spec"]["relay"]["ingress"] = {"className": "nginx", "host": "otp.shop.example"}
            create_channel(k8s_api, manifest)

            channel = wait_condition(k8s_api, channels_ns, "prod", timeout=120)
            assert channel["status"]["auth0"]["actionId"]
            apps, networking = client.AppsV1Api(k8s_api), client.NetworkingV1Api(k8s_api)
            assert apps.read_namespaced_deployment("prod-relay", channels_ns).status.available_replicas == 2
            networking.read_namespaced_ingress("prod-relay", channels_ns)
            client.PolicyV1Api(k8s_api).read_namespaced_pod_disruption_budget("prod-relay", channels_ns)

            if scope == "cluster-wide":  # the operator announced itself in the chart's peering object
                peering = client.CustomObjectsApi(k8s_api).get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", release)
                assert peering.get("status"), peering

            # Dropping the optional children (ingress, PDB) exercises the delete verbs.
            patch = {"spec": {"relay": {"replicas": 1, "ingress": None, "publicUrl": f"https://127.0.0.1:{free_port()}/prod"}}}
            client.CustomObjectsApi(k8s_api).patch_namespaced_custom_object(
                "otprelay.io", "v1alpha1", channels_ns, "otpchannels", "prod", patch)
            wait_condition(k8s_api, channels_ns, "prod", timeout=60)
            wait_for(lambda: not networking.list_namespaced_ingress(channels_ns).items, 30, what="ingress removed")

            # Delete: the finalizer removes the Auth0 side, then the channel goes.
            delete_channel(k8s_api, channels_ns, "prod")
            wait_for(lambda: get_channel(k8s_api, channels_ns, "prod") is None, 60, what="channel deleted")
            assert not [a for a in tenant.state()["actions"] if a["name"].startswith("otp-relay-")]

            refused = [line for line in operator.logs().splitlines() if REFUSED.search(line)]
            if scope == "namespaced":
                # Without any cluster-scope grant, kopf's optional cluster-wide observers (CRDs,
                # namespaces) are refused; kopf then falls back to the start-up scan and the exact
                # namespace names (its documented restricted mode). Nothing else may be refused.
                refused = [line for line in refused if not CLUSTER_SCOPE_OBSERVERS.search(line)]
            assert not refused, "requests refused by RBAC:\n" + "\n".join(refused[:20])
            operator.assert_no_secrets_logged([credentials.client_secret, api_key, token])
        finally:
            if operator is not None:
                operator.stop()
            channel = get_channel(k8s_api, channels_ns, "prod")
            if channel is not None:  # leave nothing behind even when the operator failed
                client.CustomObjectsApi(k8s_api).patch_namespaced_custom_object(
                    "otprelay.io", "v1alpha1", channels_ns, "otpchannels", "prod", {"metadata": {"finalizers": None}})
            cluster_helm.uninstall(release, namespace)
