"""The chart renders, lints and validates its values without a cluster."""

from __future__ import annotations

import tarfile
import tomllib

import pytest
import yaml

from tests.chart.helm import CHART_DIR, REPO_ROOT, Helm, HelmError, by_kind, set_values

NON_DEFAULT = {
    "replicas": 3,
    "watchNamespaces": ["shop", "bank"],
    "image.tag": "1.2.3",
    "relayImage": "registry.example/otp/relay:9.9.9",
    "driftIntervalSeconds": 120,
    "metrics.serviceMonitor.enabled": True,
    "metrics.serviceMonitor.labels": {"release": "prometheus"},
    "networkPolicy.enabled": True,
    "networkPolicy.metricsFrom.namespaceSelector": {"matchLabels": {"name": "monitoring"}},
    "resources": {"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"memory": "300Mi"}},
    "serviceAccount.name": "otp-op",
    "extraArgs": ["--log-level=DEBUG"],
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
}


def operator_container(objects: list[dict]) -> dict:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def package_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_chart_version_and_app_version_follow_the_package_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["version"] == package_version()
    assert chart["appVersion"] == package_version()


def test_crd_is_the_one_source_in_crds() -> None:
    link = CHART_DIR / "files" / "crds" / "otpchannels.otprelay.io.yaml"
    assert link.is_symlink(), "the chart must link to crds/, not keep a copy that can drift"
    assert link.resolve() == (REPO_ROOT / "crds" / "otpchannels.otprelay.io.yaml").resolve()


def test_helm_package_carries_the_crd_contents(helm: Helm, tmp_path) -> None:
    helm.run("package", str(CHART_DIR), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("otp-relay-operator-*.tgz")
    assert archive.name == f"otp-relay-operator-{package_version()}.tgz"
    with tarfile.open(archive) as tar:
        packaged = {m.name: m for m in tar.getmembers()}
        member = packaged["otp-relay-operator/files/crds/otpchannels.otprelay.io.yaml"]
        assert member.isfile(), "helm package must follow the symlink, not store it"
        data = tar.extractfile(member).read()
        assert "otp-relay-operator/files/crds/kopfpeerings.kopf.dev.yaml" in packaged
        assert "otp-relay-operator/files/crds/clusterkopfpeerings.kopf.dev.yaml" in packaged
        assert "otp-relay-operator/files/argocd/otpchannel-health.lua" in packaged
        assert not any(name.startswith("otp-relay-operator/crds/") for name in packaged), \
            "crds/ is installed once and never upgraded by Helm: the CRDs are templates"
    assert data == (REPO_ROOT / "crds" / "otpchannels.otprelay.io.yaml").read_bytes()


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_lint_strict(helm: Helm, values: dict) -> None:
    output = helm.run("lint", "--strict", str(CHART_DIR), *set_values(values))
    assert "0 chart(s) failed" in output


def test_default_render(helm: Helm) -> None:
    objects = helm.template()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted([
        "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition",
        "ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    ])
    crd_names = {o["metadata"]["name"] for o in by_kind(objects, "CustomResourceDefinition")}
    assert crd_names == {"otpchannels.otprelay.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}

    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}, \
        "never two standalone operators at once"
    container = operator_container(objects)
    assert container["image"] == f"ghcr.io/otp-relay-operator/otp-relay-operator:{package_version()}"
    assert container["command"] == ["otp-operator"]
    args = container["args"]
    assert args[0] == "run"
    assert "--all-namespaces" in args
    assert not any(a.startswith(("--peering", "--namespace")) for a in args), "one replica runs standalone"
    assert f"--relay-image=ghcr.io/otp-relay-operator/otp-relay-operator:{package_version()}" in args
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}

    (service,) = by_kind(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert "topologySpreadConstraints" not in deployment["spec"]["template"]["spec"], "one replica: nothing to spread"
    (account,) = by_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "otp-system"}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_operator_accepts_the_rendered_command_line(helm: Helm, values: dict) -> None:
    from otp_operator.cli import build_parser

    container = operator_container(helm.template(*set_values(values)))
    assert container["command"] == ["otp-operator"]
    parsed = build_parser().parse_args(container["args"])  # exits on any unknown or bad flag
    assert parsed.command == "run"
    assert parsed.metrics_port == container["ports"][1]["containerPort"]
    assert parsed.liveness.endswith(f":{container['ports'][0]['containerPort']}/healthz")


def test_restricted_pod_security(helm: Helm) -> None:
    """The operator pod meets the Pod Security Standard "restricted" profile."""
    (deployment,) = by_kind(helm.template(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "runAsUser" not in pod["securityContext"], "no fixed UID (OpenShift's restricted SCC assigns one)"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    assert container["resources"]["limits"]["memory"]


def test_non_default_render(helm: Helm) -> None:
    objects = helm.template(*set_values(NON_DEFAULT))
    assert {r["metadata"]["name"] for r in by_kind(objects, "ClusterRole")} == \
        {"otp-otp-relay-operator-view", "otp-otp-relay-operator-edit"}, "only the aggregated roles are cluster-wide"
    assert not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["bank", "shop"]
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["bank", "shop"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "otp-op", "namespace": "otp-system"}]

    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = operator_container(objects)
    assert container["image"] == "ghcr.io/otp-relay-operator/otp-relay-operator:1.2.3"
    args = container["args"]
    assert "--namespace=shop" in args and "--namespace=bank" in args
    assert "--all-namespaces" not in args
    assert "--peering=otp-otp-relay-operator" in args
    assert "--relay-image=registry.example/otp/relay:9.9.9" in args
    assert "--drift-interval=120" in args
    assert args[-1] == "--log-level=DEBUG"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "200Mi"}
    assert container["env"] == [{"name": "TZ", "value": "UTC"}]

    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["bank", "shop"]
    assert not by_kind(objects, "ClusterKopfPeering")

    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    (service,) = by_kind(objects, "Service")
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value

    (policy,) = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443}


@pytest.mark.parametrize(("release", "values", "name"), [
    ("shop", {}, "shop-otp-relay-operator"),
    ("bank", {}, "bank-otp-relay-operator"),
    ("shop", {"peering.name": "shared"}, "shared"),
])
def test_cluster_wide_peering_when_replicated_is_named_after_the_release(
        helm: Helm, release: str, values: dict, name: str) -> None:
    objects = helm.template(*set_values({"replicas": 2, **values}), release=release)
    (peering,) = by_kind(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == name
    assert f"--peering={name}" in operator_container(objects)["args"]
    (role,) = [r for r in by_kind(objects, "ClusterRole") if r["metadata"]["name"] == f"{release}-otp-relay-operator"]
    assert [r["resourceNames"] for r in role["rules"] if "resourceNames" in r] == [[name]]
    args = operator_container(objects)["args"]
    assert "--peering-lifetime=15" in args  # a standby takes over within 15 s of a crash
    # Replicas share their arguments: a priority here would be equal in all of them and freeze
    # them all; each one draws its own at start.
    assert not any(a.startswith("--priority") for a in args)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicas": 0}, "replicas"),
        ({"replicas": "two"}, "replicas"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"watchNamespaces": "shop"}, "watchNamespaces"),
        ({"image.pullPolicy": "Sometimes"}, "pullPolicy"),
        ({"image.tag": "has space"}, "tag"),
        ({"metrics.port": 70000}, "port"),
        ({"driftIntervalSeconds": 1}, "driftIntervalSeconds"),
        ({"metrics.serviceMonitor.interval": "soon"}, "interval"),
        ({"networkPolicy.egressPorts": []}, "egressPorts"),
        ({"replica": 2}, "replica"),
        ({"peering.name": "Not_A_Name"}, "peering"),
        ({"crds.install": True}, "install"),
        ({"allowedEndpoints.auth0Domains": ["a.example,b.example"]}, "auth0Domains"),
        ({"allowedEndpoints.smsBaseUrls": ["sms-proxy.internal"]}, "smsBaseUrls"),
        ({"allowedEndpoints.stateStores": ["redis.cache.svc"]}, "stateStores"),  # the port written out
        ({"allowedEndpoints.relayImages": ["registry.internal/otp@sha256"]}, "relayImages"),
        ({"clusterNetwork.cidrs": ["10.0.0.0"]}, "cidrs"),
        ({"clusterNetwork.cidrs": []}, "cidrs"),
        ({"clusterNetwork.dns.ports": [70000]}, "ports"),
        ({"networkPolicy.apiServerCIDRs": ["kubernetes.default"]}, "apiServerCIDRs"),
        ({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Never"}]},
         "whenUnsatisfiable"),
        ({"podDisruptionBudget.maxUnavailable": "half"}, "maxUnavailable"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_schema_rejects_bad_values(helm: Helm, values: dict, complaint: str) -> None:
    with pytest.raises(HelmError) as error:
        helm.template(*set_values(values))
    assert "values don't meet the specifications of the schema" in error.value.output
    assert complaint in error.value.output


def test_crds_are_templates_kept_on_uninstall_and_follow_crds_dir(helm: Helm) -> None:
    """helm upgrade updates them; whatever crds/ says (new fields included) is what is rendered."""
    crds = {o["metadata"]["name"]: o for o in by_kind(helm.template(), "CustomResourceDefinition")}
    source = yaml.safe_load((REPO_ROOT / "crds" / "otpchannels.otprelay.io.yaml").read_text())
    assert crds["otpchannels.otprelay.io"]["spec"] == source["spec"]
    for crd in crds.values():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert crd["metadata"]["labels"]["app.kubernetes.io/component"] == "crd"
    unkept = by_kind(helm.template(*set_values({"crds.keep": False})), "CustomResourceDefinition")
    assert len(unkept) == 3 and not any("helm.sh/resource-policy" in (c["metadata"].get("annotations") or {})
                                        for c in unkept)
    assert not by_kind(helm.template(*set_values({"crds.enabled": False})), "CustomResourceDefinition")


def test_security_contexts_come_from_values(helm: Helm) -> None:
    values = {"podSecurityContext.runAsUser": 1001, "podSecurityContext.seccompProfile": None,
              "securityContext.readOnlyRootFilesystem": False}
    (deployment,) = by_kind(helm.template(*set_values(values)), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1001}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_replicated_operator_gets_a_pdb_and_spreads(helm: Helm) -> None:
    objects = helm.template(*set_values({"replicas": 3}))
    (deployment,) = by_kind(objects, "Deployment")
    selector = deployment["spec"]["selector"]
    (pdb,) = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": selector}
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert all(c["labelSelector"] == selector and c["whenUnsatisfiable"] == "ScheduleAnyway" for c in constraints)
    own = {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"team": "x"}}}
    objects = helm.template(*set_values({"replicas": 3, "topologySpreadConstraints": [own],
                                         "podDisruptionBudget.maxUnavailable": "50%"}))
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["topologySpreadConstraints"] == [own]
    assert by_kind(objects, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == "50%"
    assert not by_kind(helm.template(), "PodDisruptionBudget"), "one replica: a PDB would block every drain"
    assert not by_kind(helm.template(*set_values({"replicas": 2, "podDisruptionBudget.enabled": False})),
                       "PodDisruptionBudget")


def test_allowed_endpoints_reach_the_operator(helm: Helm) -> None:
    from otp_operator.cli import build_parser

    values = {"allowedEndpoints.auth0Domains": ["login.shop.example", "*.auth.shop.example"],
              "allowedEndpoints.smsBaseUrls": ["https://sms-proxy.internal:8443"]}
    parsed = build_parser().parse_args(operator_container(helm.template(*set_values(values)))["args"])
    assert parsed.allow_auth0_domain == ["login.shop.example", "*.auth.shop.example"]
    assert parsed.allow_sms_base_url == ["https://sms-proxy.internal:8443"]
    default = build_parser().parse_args(operator_container(helm.template())["args"])
    assert default.allow_auth0_domain == [] and default.allow_sms_base_url == []


def test_namespace_globs_are_not_advertised() -> None:
    """kopf would need cluster-wide namespace access for them; the chart takes plain names only."""
    from otp_operator.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    (namespace,) = [a for a in run._actions if "--namespace" in a.option_strings]
    assert "glob" not in namespace.help and "*" not in namespace.help


def test_state_store_and_relay_image_allow_lists_reach_the_operator(helm: Helm) -> None:
    from otp_operator.cli import build_parser

    values = {"allowedEndpoints.stateStores": ["redis-master.cache.svc.cluster.local:6379"],
              "allowedEndpoints.relayImages": ["registry.internal:5000/mirror/*"]}
    parsed = build_parser().parse_args(operator_container(helm.template(*set_values(values)))["args"])
    assert parsed.allow_state_store == ["redis-master.cache.svc.cluster.local:6379"]
    assert parsed.allow_relay_image == ["registry.internal:5000/mirror/*"]
    default = build_parser().parse_args(operator_container(helm.template())["args"])
    assert default.allow_state_store == [] and default.allow_relay_image == []


def test_cluster_network_defaults_are_the_operator_s_and_reach_it(helm: Helm) -> None:
    from otp_operator import egress
    from otp_operator.cli import build_parser, relay_egress

    default = relay_egress(build_parser().parse_args(operator_container(helm.template())["args"]))
    assert default == egress.RelayEgress(), "the chart's clusterNetwork defaults must be the operator's"
    values = {"clusterNetwork": {"cidrs": ["10.0.0.0/8", "2001:db8::/32"], "relayHttpsEgress": "none", "dns": {
        "namespace": "openshift-dns",  # helm merges maps: null drops the default label
        "podLabels": {"dns.operator.openshift.io/daemonset-dns": "default", "k8s-app": None},
        "ports": [5353]}}}
    custom = relay_egress(build_parser().parse_args(operator_container(helm.template(*set_values(values)))["args"]))
    assert custom == egress.RelayEgress(("10.0.0.0/8", "2001:db8::/32"), "openshift-dns",
                                        (("dns.operator.openshift.io/daemonset-dns", "default"),), (5353,), "none")


def test_operator_network_policy_dns_only_to_the_cluster_dns_and_api_server_where_told(helm: Helm) -> None:
    from tests.support.netpolicy import DNS_POD, OTHER_POD, egress_allows

    (policy,) = by_kind(helm.template(*set_values({"networkPolicy.enabled": True})), "NetworkPolicy")
    assert egress_allows(policy, 53, "UDP", pod=DNS_POD) and egress_allows(policy, 53, "TCP", pod=DNS_POD)
    assert not egress_allows(policy, 53, "UDP", pod=OTHER_POD) and not egress_allows(policy, 53, "UDP", ip="8.8.8.8")
    # Without the API server's addresses HTTPS goes anywhere (the API server is inside the cluster).
    assert egress_allows(policy, 6443, ip="10.0.0.1") and egress_allows(policy, 443, ip="52.220.0.10")

    values = {"networkPolicy.enabled": True, "networkPolicy.apiServerCIDRs": ["10.96.0.1/32", "172.18.0.2/32"]}
    (policy,) = by_kind(helm.template(*set_values(values)), "NetworkPolicy")
    for ip in ("10.96.0.1", "172.18.0.2"):
        assert egress_allows(policy, 443, ip=ip) and egress_allows(policy, 6443, ip=ip)
    assert egress_allows(policy, 443, ip="52.220.0.10") and not egress_allows(policy, 6443, ip="52.220.0.10")
    for ip in ("10.244.0.5", "169.254.169.254", "192.168.1.1", "fd00:ec2::254"):
        assert not egress_allows(policy, 443, ip=ip), ip
    assert not egress_allows(policy, 443, pod=OTHER_POD)
