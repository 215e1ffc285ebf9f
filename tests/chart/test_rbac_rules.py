"""The chart's RBAC is exactly the operator's needs: nothing outside this allow-list, no wildcard.

Each entry says why the operator needs it. test_rbac_operator.py proves the other direction: the
operator, running as the chart's ServiceAccount, brings a channel to Ready with these rules only.
"""

from __future__ import annotations

import pytest

from tests.chart.helm import Helm, by_kind, set_values

PEERING = "otp-otp-relay-operator"  # the release's full name (helm.template renders release "otp")

# (apiGroup, resource, verb, resourceName or None)
CHANNEL_RULES = {
    # kopf lists and watches the channels and patches them (finalizer, progress annotations).
    *(("otprelay.io", "otpchannels", verb, None) for verb in ("list", "watch", "patch")),
    # Conditions, observedGeneration, relay and auth0 status (merge patch on the subresource).
    ("otprelay.io", "otpchannels/status", "patch", None),
    # ownerReferences with blockOwnerDeletion need it under OwnerReferencesPermissionEnforcement.
    ("otprelay.io", "otpchannels/finalizers", "update", None),
    # Secrets: GET by name (referenced and own); list/watch only with the operator's label selector
    # (RBAC cannot say so: test_rbac_operator.py checks the audit log); create/patch the relay's
    # own Secrets, the label on referenced ones and the in-use finalizer. Never update or delete.
    *(("", "secrets", verb, None) for verb in ("get", "list", "watch", "create", "patch")),
    # Relay Deployment: read for availability, server-side applied, watched for drift; deleted
    # (orphaning its pods) only to re-create it when its immutable selector changed.
    *(("apps", "deployments", verb, None) for verb in ("get", "list", "watch", "create", "patch", "delete")),
    # Relay Service: server-side applied, watched for drift.
    *(("", "services", verb, None) for verb in ("list", "watch", "create", "patch")),
    # Optional children: also deleted when spec.relay.ingress goes away or replicas drop to 1.
    *(("networking.k8s.io", "ingresses", verb, None) for verb in ("list", "watch", "create", "patch", "delete")),
    *(("policy", "poddisruptionbudgets", verb, None) for verb in ("list", "watch", "create", "patch", "delete")),
    # Relay NetworkPolicy: server-side applied, watched for drift.
    *(("networking.k8s.io", "networkpolicies", verb, None) for verb in ("list", "watch", "create", "patch")),
    # Events for every create, change, repair, rotation and failure.
    ("", "events", "create", None),
}
CLUSTER_ONLY_RULES = {
    # kopf notices CRDs installed or upgraded after it started.
    ("apiextensions.k8s.io", "customresourcedefinitions", "list", None),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch", None),
}


def peering_rules(resource: str) -> set[tuple[str, str, str, str | None]]:
    """kopf peering: watch the peers; patch (announce itself in) only the one shared object."""
    return {
        ("kopf.dev", resource, "list", None),
        ("kopf.dev", resource, "watch", None),
        ("kopf.dev", resource, "patch", PEERING),
    }


def operator_cluster_roles(objects: list[dict]) -> list[dict]:
    """The ClusterRoles bound to the operator (not the aggregated view/edit ones)."""
    return [r for r in by_kind(objects, "ClusterRole")
            if not any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in r["metadata"]["labels"])]


def flatten(rules: list[dict]) -> set[tuple[str, str, str, str | None]]:
    granted = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        names = rule.get("resourceNames") or [None]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names:
                        granted.add((group, resource, verb, name))
    return granted


def assert_no_wildcards(rules: list[dict]) -> None:
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert not any("*" in value for value in rule.get(key, [])), f"wildcard in {key}: {rule}"


@pytest.mark.parametrize("replicas", [1, 2])
def test_cluster_wide_rules_are_exactly_the_allow_list(helm: Helm, replicas: int) -> None:
    objects = helm.template(*set_values({"replicas": replicas}))
    (role,) = operator_cluster_roles(objects)
    assert not by_kind(objects, "Role")
    assert_no_wildcards(role["rules"])
    expected = CHANNEL_RULES | CLUSTER_ONLY_RULES | (peering_rules("clusterkopfpeerings") if replicas > 1 else set())
    assert flatten(role["rules"]) == expected


@pytest.mark.parametrize("replicas", [1, 2])
def test_namespaced_rules_are_exactly_the_allow_list(helm: Helm, replicas: int) -> None:
    objects = helm.template(*set_values({"replicas": replicas, "watchNamespaces": ["shop", "bank"]}))
    assert not operator_cluster_roles(objects) and not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["bank", "shop"]
    expected = CHANNEL_RULES | (peering_rules("kopfpeerings") if replicas > 1 else set())
    for role in roles:
        assert_no_wildcards(role["rules"])
        assert flatten(role["rules"]) == expected


def test_rbac_can_be_left_to_the_user(helm: Helm) -> None:
    objects = helm.template(*set_values({"rbac.create": False}))
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {o["kind"] for o in objects}


def test_aggregated_roles_add_channels_to_view_edit_and_admin(helm: Helm) -> None:
    objects = helm.template()
    aggregated = {r["metadata"]["name"]: r for r in by_kind(objects, "ClusterRole") if r not in operator_cluster_roles(objects)}
    view, edit = aggregated["otp-otp-relay-operator-view"], aggregated["otp-otp-relay-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert flatten(view["rules"]) == {("otprelay.io", "otpchannels", verb, None) for verb in ("get", "list", "watch")}
    labels = edit["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert flatten(edit["rules"]) == {("otprelay.io", "otpchannels", verb, None)
                                      for verb in ("create", "update", "patch", "delete", "deletecollection")}
    assert not any("status" in r for role in (view, edit) for rule in role["rules"] for r in rule["resources"])
    assert len(aggregated) == 2
    assert not [r for r in by_kind(helm.template(*set_values({"rbac.aggregateToDefaultRoles": False})), "ClusterRole")
                if r["metadata"]["name"].endswith(("-view", "-edit"))]


def test_every_child_kind_the_operator_makes_is_watched_and_written_as_allowed() -> None:
    """A kind added to the operator's table of children (watched for drift, server-side applied)
    needs its rules here, with the reason; a forgotten one fails this, not a cluster."""
    from otp_operator import names as operator_names  # noqa: PLC0415

    for child in (operator_names.SECRET, *operator_names.WATCHED_CHILDREN):
        for verb in ("list", "watch", "create", "patch"):
            assert (child.group, child.plural, verb, None) in CHANNEL_RULES, (child, verb)
