"""Relay children fit hardened clusters: NetworkPolicy, topology spread, no fixed UID, Ingress
annotations and class, selector labels that never collide with Argo CD or Helm."""

from __future__ import annotations

import copy

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from otp_operator import egress, names, render
from otp_operator.spec import parse_channel

from tests.support.channels import create_channel, get_channel, wait_condition, wait_for
from tests.support.netpolicy import DNS_POD, OTHER_POD, egress_allows

SPEC = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0-mgmt"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {
        "replicas": 3,
        "ingress": {
            "host": "otp.shop.example", "className": "alb", "tlsSecretName": "otp-tls",
            "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing",
                            "cert-manager.io/cluster-issuer": "letsencrypt"},
        },
    },
}
OWNER = render.owner_reference("uid-1", "prod")
ARGO_CD_AND_HELM_LABELS = ("app.kubernetes.io/instance", "helm.sh/chart", "app.kubernetes.io/part-of")
# What earlier versions put on the relay pods (and selected them by).
OLD_POD_LABELS = {names.LABEL_NAME: names.RELAY_APP_NAME, "app.kubernetes.io/instance": "prod",
                  names.LABEL_COMPONENT: "relay", names.LABEL_MANAGED_BY: names.OPERATOR_NAME,
                  names.LABEL_CHANNEL: "prod"}
OLD_SELECTOR = {names.LABEL_NAME: names.RELAY_APP_NAME, "app.kubernetes.io/instance": "prod"}


def children(namespace: str = "shop", **relay: object) -> dict[str, dict]:
    spec = copy.deepcopy(SPEC)
    spec["relay"].update(relay)
    ch = parse_channel(namespace, "prod", spec)
    rendered = render.render_children(ch, image="img:1", signing_keys=("k1",), secrets_checksum="c", owner=OWNER)
    return {m["kind"]: m for m in rendered.apply}


def pod_spec(kids: dict[str, dict]) -> dict:
    return kids["Deployment"]["spec"]["template"]["spec"]


def test_network_policy_opens_only_the_public_port_and_https_egress() -> None:
    kids = children()
    policy = kids["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == kids["Deployment"]["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    container = pod_spec(kids)["containers"][0]
    public, *restricted = policy["ingress"]
    assert public == {"ports": [{"port": names.RELAY_PORT_NAME, "protocol": "TCP"}]}, "public port from anywhere"
    other_ports = [p["name"] for p in container["ports"] if p["name"] != names.RELAY_PORT_NAME]
    if other_ports:  # the admin/metrics listener: the channel's namespace and labelled namespaces only
        (rule,) = restricted
        assert [p["port"] for p in rule["ports"]] == other_ports
        assert rule["from"] == [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {
            names.LABEL_RELAY_METRICS_NAMESPACE: names.RELAY_METRICS_NAMESPACE_VALUE}}}]
    else:
        assert restricted == []
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    assert all(rule.get("to") for rule in policy["egress"]), "no egress rule may reach every address"


@pytest.mark.parametrize(("ip", "port", "allowed"), [
    ("52.220.0.10", 443, True),  # a public address: 8x8's API
    ("2600:1f18::10", 443, True),  # a public IPv6 address
    ("52.220.0.10", 80, False),
    ("10.96.0.1", 443, False),  # the kubernetes Service (API server)
    ("10.244.3.7", 443, False),  # a pod
    ("172.20.0.5", 443, False), ("192.168.1.1", 443, False), ("100.100.100.200", 443, False),
    ("169.254.169.254", 443, False), ("169.254.169.254", 80, False),  # cloud metadata
    ("fd00:ec2::254", 443, False), ("fe80::1", 443, False),
    ("8.8.8.8", 53, False),  # DNS only through the cluster's DNS
])
def test_network_policy_egress_reaches_only_addresses_outside_the_cluster(ip: str, port: int, allowed: bool) -> None:
    policy = children()["NetworkPolicy"]
    assert egress_allows(policy, port, ip=ip) is allowed
    assert egress_allows(policy, port, "UDP", ip=ip) is False


def test_network_policy_dns_goes_only_to_the_cluster_dns_pods() -> None:
    policy = children()["NetworkPolicy"]
    for protocol in ("UDP", "TCP"):
        assert egress_allows(policy, 53, protocol, pod=DNS_POD)
        assert not egress_allows(policy, 53, protocol, pod=OTHER_POD), "DNS to any pod of the cluster"
    assert not egress_allows(policy, 443, pod=OTHER_POD), "HTTPS to a pod of the cluster"
    assert not egress_allows(policy, 6379, pod=OTHER_POD)


def test_network_policy_egress_follows_the_operator_settings() -> None:
    spec = copy.deepcopy(SPEC)
    ch = parse_channel("shop", "prod", spec)
    settings = egress.RelayEgress(cluster_cidrs=("10.0.0.0/8", "203.0.113.0/24"), dns_namespace="openshift-dns",
                                  dns_pod_labels=(("dns.operator.openshift.io/daemonset-dns", "default"),),
                                  dns_ports=(5353,))
    policy = render.render_children(ch, image="img:1", signing_keys=("k1",), secrets_checksum="c", owner=OWNER,
                                    egress=settings).apply
    (policy,) = [m for m in policy if m["kind"] == "NetworkPolicy"]
    assert not egress_allows(policy, 443, ip="203.0.113.9") and egress_allows(policy, 443, ip="192.168.1.1")
    openshift_dns = {"namespace": {"kubernetes.io/metadata.name": "openshift-dns"},
                     "pod": {"dns.operator.openshift.io/daemonset-dns": "default"}}
    assert egress_allows(policy, 5353, "UDP", pod=openshift_dns)
    assert not egress_allows(policy, 53, "UDP", pod=openshift_dns) and not egress_allows(policy, 5353, "UDP", pod=DNS_POD)


def test_network_policy_leaves_https_to_an_fqdn_policy_when_told() -> None:
    ch = parse_channel("shop", "prod", SPEC)
    deployment = render.relay_deployment(ch, "img:1", "c", OWNER)
    policy = render.relay_network_policy(ch, deployment, OWNER, egress.RelayEgress(https="none"))
    assert not egress_allows(policy, 443, ip="52.220.0.10") and egress_allows(policy, 53, "UDP", pod=DNS_POD)


def test_network_policy_keeps_every_non_public_port_to_the_namespace_and_monitoring() -> None:
    ch = parse_channel("shop", "prod", SPEC)
    deployment = render.relay_deployment(ch, "img:1", "c", OWNER)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["ports"] = [*container["ports"], {"name": "admin", "containerPort": 9090, "protocol": "TCP"}]
    public, admin = render.relay_network_policy(ch, deployment, OWNER)["spec"]["ingress"]
    assert public["ports"] == [{"port": names.RELAY_PORT_NAME, "protocol": "TCP"}] and "from" not in public
    assert admin["ports"] == [{"port": p["name"], "protocol": "TCP"}
                              for p in container["ports"] if p["name"] != names.RELAY_PORT_NAME]
    assert {"port": "admin", "protocol": "TCP"} in admin["ports"]
    assert admin["from"] == [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {
        names.LABEL_RELAY_METRICS_NAMESPACE: names.RELAY_METRICS_NAMESPACE_VALUE}}}]


@pytest.mark.parametrize("base_url", ["https://sms-proxy.internal:8443", "https://sms-proxy.internal"])
def test_network_policy_lets_the_relay_reach_an_allowed_base_url_on_its_port(base_url: str) -> None:
    """An SMS proxy the administrator allowed is usually in the cluster: its port, any address."""
    spec = copy.deepcopy(SPEC)
    spec["sms"]["baseUrl"] = base_url
    ch = parse_channel("shop", "prod", spec)
    policy = render.relay_network_policy(ch, render.relay_deployment(ch, "img:1", "c", OWNER), OWNER)
    port = 8443 if base_url.endswith(":8443") else 443
    assert egress_allows(policy, port, pod=OTHER_POD) and egress_allows(policy, port, ip="10.1.2.3")
    assert not egress_allows(policy, 6379, pod=OTHER_POD)


def test_network_policy_keeps_8x8_outside_the_cluster() -> None:
    spec = copy.deepcopy(SPEC)
    spec["sms"]["baseUrl"] = "https://sms.8x8.com"
    ch = parse_channel("shop", "prod", spec)
    policy = render.relay_network_policy(ch, render.relay_deployment(ch, "img:1", "c", OWNER), OWNER)
    assert not egress_allows(policy, 443, ip="10.1.2.3") and egress_allows(policy, 443, ip="52.220.0.10")


@pytest.mark.parametrize(("url", "port"), [("redis://redis.shop:6380/0", 6380), ("rediss://redis.shop", 6379)])
def test_network_policy_lets_the_relay_reach_its_state_store_on_its_port_only(url: str, port: int) -> None:
    spec = copy.deepcopy(SPEC)
    spec["relay"]["stateStore"] = {"url": url}
    ch = parse_channel("shop", "prod", spec)
    policy = render.relay_network_policy(ch, render.relay_deployment(ch, "img:1", "c", OWNER), OWNER)
    assert egress_allows(policy, port, pod=OTHER_POD) and egress_allows(policy, port, ip="10.1.2.3")
    assert not egress_allows(policy, 443, pod=OTHER_POD) and not egress_allows(policy, 443, ip="10.1.2.3")
    assert not egress_allows(policy, port + 1, pod=OTHER_POD)


def test_replicas_spread_over_nodes_and_zones_without_blocking() -> None:
    kids = children(replicas=3)
    constraints = pod_spec(kids)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
        assert constraint["labelSelector"] == kids["Deployment"]["spec"]["selector"]
    assert "topologySpreadConstraints" not in pod_spec(children(replicas=1))


def test_no_fixed_uid_gid_or_fs_group() -> None:
    """OpenShift's restricted SCC assigns the UID and fsGroup; runAsNonRoot needs neither."""
    pod = pod_spec(children())
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert not {"runAsUser", "runAsGroup"} & set(container["securityContext"])
    # Without an fsGroup the mounted Secret files must be readable by whatever UID the pod gets.
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o004


def test_ingress_gets_the_spec_annotations_and_class() -> None:
    ingress = children()["Ingress"]
    assert ingress["metadata"]["annotations"] == SPEC["relay"]["ingress"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    plain = copy.deepcopy(SPEC)
    del plain["relay"]["ingress"]["annotations"]
    assert "annotations" not in render.relay_ingress(parse_channel("shop", "prod", plain), OWNER)["metadata"]


def test_no_child_carries_or_selects_by_argo_cd_or_helm_labels() -> None:
    kids = children()
    selectors = [
        kids["Deployment"]["spec"]["selector"]["matchLabels"], kids["Service"]["spec"]["selector"],
        kids["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        kids["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
        kids["Deployment"]["spec"]["template"]["metadata"]["labels"],
    ]
    for labels in [*selectors, *(m["metadata"]["labels"] for m in kids.values())]:
        assert not set(ARGO_CD_AND_HELM_LABELS) & set(labels), labels
    assert kids["Deployment"]["spec"]["selector"]["matchLabels"] == names.selector_labels("prod")


def test_the_new_selector_matches_the_pods_of_earlier_versions() -> None:
    """What lets a re-created Deployment adopt the running ReplicaSet (no downtime)."""
    assert names.selector_labels("prod").items() <= OLD_POD_LABELS.items()


# --- on the API server -----------------------------------------------------------------------

@pytest.mark.cluster
def test_every_child_is_admitted_and_the_pod_passes_restricted_pod_security(k8s_api, namespace) -> None:
    core = client.CoreV1Api(k8s_api)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    dynamic = DynamicClient(k8s_api)
    kids = children(namespace)
    admitted = {}
    for kind, manifest in kids.items():
        manifest["metadata"].pop("ownerReferences")  # the owner does not exist in a dry run
        resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=kind)
        admitted[kind] = resource.server_side_apply(body=manifest, namespace=namespace, field_manager="test",
                                                    dry_run="All").to_dict()
    assert set(admitted) == {"Secret", "Deployment", "Service", "Ingress", "PodDisruptionBudget", "NetworkPolicy"}
    assert admitted["Ingress"]["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert admitted["Ingress"]["spec"]["ingressClassName"] == "alb"
    assert len(admitted["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"]) == 2
    assert admitted["NetworkPolicy"]["spec"]["egress"] == kids["NetworkPolicy"]["spec"]["egress"]
    # A pod from the template, under the "restricted" Pod Security Standard, with no UID set.
    template = kids["Deployment"]["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "relay-template", "namespace": namespace, "labels": template["metadata"]["labels"]},
           "spec": template["spec"]}
    created = core.create_namespaced_pod(namespace, pod, dry_run="All")
    assert created.spec.security_context.run_as_user is None


@pytest.mark.cluster
def test_a_deployment_with_the_old_selector_is_recreated_adopting_its_pods(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator) -> None:
    apps = client.AppsV1Api(k8s_api)
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url, relay={"replicas": 1, "publicUrl": ch.public_url}))
    uid = get_channel(k8s_api, namespace, "prod")["metadata"]["uid"]
    # The relay Deployment as an earlier version created it, already running.
    old = render.relay_deployment(parse_channel(namespace, "prod", get_channel(k8s_api, namespace, "prod")["spec"]),
                                  "example.test/otp-relay:old", "old", render.owner_reference(uid, "prod"))
    old["metadata"]["labels"] = OLD_POD_LABELS
    old["spec"]["selector"] = {"matchLabels": OLD_SELECTOR}
    old["spec"]["template"]["metadata"]["labels"] = OLD_POD_LABELS
    apps.create_namespaced_deployment(namespace, old)
    old_uid = apps.read_namespaced_deployment("prod-relay", namespace).metadata.uid
    replica_set = wait_for(lambda: apps.list_namespaced_replica_set(namespace).items, what="old ReplicaSet")[0]

    run_operator()
    wait_condition(k8s_api, namespace, "prod", timeout=120)
    deployment = apps.read_namespaced_deployment("prod-relay", namespace)
    assert deployment.metadata.uid != old_uid
    assert deployment.spec.selector.match_labels == names.selector_labels("prod")
    assert "app.kubernetes.io/instance" not in deployment.metadata.labels
    # The running ReplicaSet was orphaned, not deleted, and adopted by the new Deployment.
    adopted = apps.read_namespaced_replica_set(replica_set.metadata.name, namespace)
    assert adopted.metadata.uid == replica_set.metadata.uid
    assert [(o.kind, o.uid) for o in adopted.metadata.owner_references or []] == [("Deployment", deployment.metadata.uid)]
