"""The operator works with the chart's RBAC and nothing more, and reads no Secret it does not need.

The chart is installed into the cluster; the operator then runs as a local process (kwok does not
run the image) authenticating as the chart's ServiceAccount with a token from the TokenRequest
API, against the API server with RBAC on. It must bring a channel to Ready (its 8x8 Secret created
after it, as GitOps often does), follow a change of that Secret, and clean up on delete without a
single request refused. RBAC cannot restrict list/watch to a label selector, so the API server's
audit log shows what the operator actually asked for: Secrets listed and watched only with its
label selector, read by name only when a channel names them. test_rbac_rules.py keeps the rules
to the allow-list.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client
from otp_operator import names
from otp_sandbox.crd import install_crd
from otp_sandbox.processes import OperatorProcess

from tests.chart.helm import CHART_DIR, Helm, set_values
from tests.chart.kube import adopt_crds, extra_namespaces
from tests.chart.serviceaccount import service_account_kubeconfig, service_account_token
from tests.fixtures.operator import TEST_OPERATOR_ARGS
from tests.fixtures.relay import free_port
from tests.support.channels import (
    channel_manifest,
    condition,
    create_channel,
    delete_channel,
    get_channel,
    make_secret,
    owned_actions,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.cluster

PEERING_CRDS = ("kopfpeerings.kopf.dev.yaml", "clusterkopfpeerings.kopf.dev.yaml")
# What RBAC says when it refuses (the API server's "User ... cannot <verb> resource ...", kopf's
# own "Not enough permissions"); other 403s (e.g. a namespace being deleted) are not RBAC's.
REFUSED = re.compile(r"cannot \w+ resource|Not enough permissions", re.I)
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


@pytest.mark.timeout(600)  # a loaded machine: helm install --wait, then several waits of up to 2 min
@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_operator_brings_a_channel_to_ready_as_the_chart_service_account(
    scope: str, cluster_helm: Helm, k8s_api: client.ApiClient, kubeconfig: Path, namespace: str,
    otpchannel_crd: dict, auth0_tenant, sms_emulator, ssl_cert_file: Path, tmp_path: Path, apiserver_audit_log: Path,
) -> None:
    release = f"otp-{uuid.uuid4().hex[:8]}"
    service_account = f"{release}-otp-relay-operator"
    with extra_namespaces(k8s_api, 2) as (channels_ns, other_ns):
        # Cluster-wide also runs with peering (two replicas), so the peering rules are exercised.
        values: dict = {"watchNamespaces": [channels_ns]} if scope == "namespaced" else {"replicas": 2, "peering.name": release}
        operator = None
        try:
            for crd in PEERING_CRDS:  # Helm cannot create a CRD and an object of it in one install
                install_crd(k8s_api, path=CHART_DIR / "files" / "crds" / crd)
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
            operator.env["POD_ID"] = f"{release}-operator"  # its identity in the peering object
            operator.start()

            tenant = auth0_tenant()
            tenant.route_phone_messages_to("phone-provider")
            credentials = tenant.clients[0]
            make_secret(k8s_api, channels_ns, "auth0-mgmt",
                        {"client_id": credentials.client_id, "client_secret": credentials.client_secret})
            make_secret(k8s_api, channels_ns, "unrelated", {"password": secrets.token_urlsafe(12)})
            subaccount, api_key = f"sub_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24)
            sms_emulator.add_subaccount(subaccount, api_key)
            manifest = channel_manifest(channels_ns, "prod", domain=tenant.domain,
                                        public_url="https://otp.shop.example/prod",
                                        sms_base_url=sms_emulator.base_url, replicas=2)
            manifest["spec"]["sms"]["subaccountId"] = subaccount
            manifest["spec"]["relay"]["ingress"] = {"className": "nginx", "host": "otp.shop.example"}
            create_channel(k8s_api, manifest)

            # GitOps order: the 8x8 Secret lands after the channel. Not watched while missing (it
            # has no label yet): the channel looks for it again by GET within seconds, long before
            # the grace (300 s) or anything else would wake it.
            wait_condition(k8s_api, channels_ns, "prod", "Ready", "False", reason="WaitingForSecret", timeout=60)
            make_secret(k8s_api, channels_ns, "eightbyeight", {"apikey": api_key})
            channel = wait_condition(k8s_api, channels_ns, "prod", timeout=120)
            assert channel["status"]["auth0"]["actionId"]
            referenced = {names.LABEL_SECRET: names.SECRET_REFERENCED}
            assert secret_labels(k8s_api, channels_ns, "eightbyeight").items() >= referenced.items()
            assert secret_labels(k8s_api, channels_ns, "auth0-mgmt").items() >= referenced.items()
            assert secret_labels(k8s_api, channels_ns, "prod-relay-signing-key")[names.LABEL_SECRET] == names.SECRET_RELAY
            assert names.LABEL_SECRET not in secret_labels(k8s_api, channels_ns, "unrelated")

            apps, networking = client.AppsV1Api(k8s_api), client.NetworkingV1Api(k8s_api)
            assert apps.read_namespaced_deployment("prod-relay", channels_ns).status.available_replicas == 2
            networking.read_namespaced_ingress("prod-relay", channels_ns)
            client.PolicyV1Api(k8s_api).read_namespaced_pod_disruption_budget("prod-relay", channels_ns)

            if scope == "cluster-wide":  # the operator announced itself in the chart's peering object
                peering = client.CustomObjectsApi(k8s_api).get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", release)
                assert f"{release}-operator" in (peering.get("status") or {}), peering

            # A change of the referenced Secret arrives through the label-selected watch (nothing
            # else would reconcile the Ready channel for minutes) and rolls the relay.
            rolled = roll_8x8_key(k8s_api, channels_ns, channel)
            # Its label removed by hand: put back (the watch reports the removal as a deletion,
            # the channel reads the Secret again); later changes still arrive.
            core = client.CoreV1Api(k8s_api)
            core.patch_namespaced_secret("eightbyeight", channels_ns, {"metadata": {"labels": {names.LABEL_SECRET: None}}})
            wait_for(lambda: secret_labels(k8s_api, channels_ns, "eightbyeight").get(names.LABEL_SECRET)
                     == names.SECRET_REFERENCED, 60, what="the label put back")
            roll_8x8_key(k8s_api, channels_ns, rolled)

            # Dropping the optional children (ingress, PDB) exercises the delete verbs.
            patch = {"spec": {"relay": {"replicas": 1, "ingress": None, "publicUrl": f"https://127.0.0.1:{free_port()}/prod"}}}
            client.CustomObjectsApi(k8s_api).patch_namespaced_custom_object(
                "otprelay.io", "v1alpha1", channels_ns, "otpchannels", "prod", patch)
            wait_condition(k8s_api, channels_ns, "prod", timeout=60)
            wait_for(lambda: not networking.list_namespaced_ingress(channels_ns).items, 30, what="ingress removed")

            # Delete: the finalizer removes the Auth0 side, then the channel goes.
            delete_channel(k8s_api, channels_ns, "prod")
            wait_for(lambda: get_channel(k8s_api, channels_ns, "prod") is None, 60, what="channel deleted")
            assert not owned_actions(tenant.state())
            # No channel references them any more: label (and the in-use finalizer) gone.
            for name in ("eightbyeight", "auth0-mgmt"):
                wait_for(lambda n=name: names.LABEL_SECRET not in secret_labels(k8s_api, channels_ns, n)
                         and not core.read_namespaced_secret(n, channels_ns).metadata.finalizers,
                         30, what=f"{name} unlabelled and released")

            reads = secret_reads(apiserver_audit_log, f"system:serviceaccount:{namespace}:{service_account}")
            assert_reads_only_what_channels_need(reads, channels_ns if scope == "namespaced" else None)

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


def secret_labels(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    return client.CoreV1Api(api).read_namespaced_secret(name, namespace).metadata.labels or {}


def roll_8x8_key(api: client.ApiClient, namespace: str, before: dict) -> dict:
    """Change the channel's 8x8 key (keeping the Secret's labels, as kubectl apply or Flux do);
    returns the channel once its relay carries the new key's checksum."""
    client.CoreV1Api(api).patch_namespaced_secret("eightbyeight", namespace,
                                                  {"stringData": {"apikey": secrets.token_urlsafe(24)}})
    old = before["status"]["relay"]["secretsChecksum"]

    def rolled() -> dict | None:
        channel = get_channel(api, namespace, "prod") or {}
        new = (channel.get("status") or {}).get("relay", {}).get("secretsChecksum")
        return channel if new not in (None, old) and condition(channel, "Ready").get("status") == "True" else None

    return wait_for(rolled, 45, what="the relay rolled to the new 8x8 key")


def secret_reads(audit_log: Path, user: str) -> list[dict]:
    """The API server's audit events of ``user`` reading Secrets (one per request)."""
    events = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
    reads = {e["auditID"]: e for e in events if e["user"]["username"] == user}
    return list(reads.values())


def assert_reads_only_what_channels_need(reads: list[dict], namespace: str | None) -> None:
    """Lists and watches only with the operator's label selector; GETs only of the Secrets the channel
    named or the operator owns; in the watched namespace only, when it has one."""
    collections = [e for e in reads if e["verb"] in ("list", "watch")]
    assert any(e["verb"] == "watch" for e in collections), "the operator never watched Secrets"
    for event in collections:
        query = parse_qs(urlsplit(event["requestURI"]).query)
        assert query.get("labelSelector") == [names.SECRET_WATCH_SELECTOR], event["requestURI"]
    by_name = {e["objectRef"].get("name") for e in reads if e["verb"] == "get"}
    assert by_name <= {"eightbyeight", "auth0-mgmt", "prod-relay-signing-key", "prod-relay-receipt-token"}, by_name
    assert {"eightbyeight", "auth0-mgmt"} <= by_name
    if namespace is not None:
        assert {e["objectRef"].get("namespace") for e in reads} == {namespace}
