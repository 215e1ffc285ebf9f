"""Unit tests of the operator's pure parts: spec parsing, rendering, status, secrets, rotation."""

from __future__ import annotations

import base64
import itertools
import re

import pytest
from otp_operator import names, render, rotation, status
from otp_operator.secrets import SecretProblem, checksum, secret_value, signing_keys
from otp_operator.spec import SecretKeyRef, SpecError, parse_channel
from otp_sandbox.processes import encodings

from tests.support.builders import OWNER
from tests.support.builders import SHOP_SPEC as SPEC


def channel(**relay_overrides):
    spec = {**SPEC, "relay": {**SPEC["relay"], **relay_overrides}}
    return parse_channel("shop", "prod", spec)


def by_kind(children):
    return {m["kind"]: m for m in children.apply}


def test_spec_defaults_match_the_crd():
    ch = channel()
    assert ch.auth0.integration == "phone-provider"
    assert ch.auth0.name == "otp-relay-shop-prod"
    assert ch.auth0.client_id_ref == SecretKeyRef("auth0-mgmt", "client_id")
    assert ch.sms.api_key == SecretKeyRef("eightbyeight", "apikey")
    assert ch.sms.region == "ap" and ch.sms.encoding == "AUTO"
    assert ch.relay.public_url == "https://otp.shop.example/prod"
    assert ch.relay.path_prefix == "/prod"
    assert ch.owner == "shop/prod"


def test_public_url_defaults_to_ingress_host():
    spec = {**SPEC, "relay": {"ingress": {"host": "otp.shop.example"}}}
    ch = parse_channel("shop", "prod", spec)
    assert ch.relay.public_url == "https://otp.shop.example"
    assert ch.relay.path_prefix == ""


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["relay"].clear(), "spec.relay.publicUrl or spec.relay.ingress.host is required"),
        (lambda s: s["auth0"].update(domain="https://x.auth0.com"), "spec.auth0.domain must be host[:port]"),
        (lambda s: s["auth0"].update(integration="sms"), "spec.auth0.integration must be one of"),
        (lambda s: s["relay"].update(publicUrl="http://plain.example"), "must be an https URL"),
        (lambda s: s["policy"]["perRecipient"].update(window="ten"), "is not a duration"),
        (lambda s: s["sms"].pop("subaccountId"), "spec.sms.subaccountId is required"),
    ],
)
def test_bad_spec_gets_a_specific_error(mutate, message):
    import copy

    spec = copy.deepcopy(SPEC)
    mutate(spec)
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_channel("shop", "prod", spec)


def test_children_are_owned_labelled_and_complete():
    children = render.render_children(
        channel(), image="img:1", signing_keys=("k1",), secrets_checksum="abc", owner=OWNER
    )
    kinds = by_kind(children)
    assert set(kinds) == {"Secret", "Deployment", "Service", "Ingress", "PodDisruptionBudget", "NetworkPolicy"}
    assert children.delete == ()
    for manifest in children.apply:
        assert manifest["metadata"]["ownerReferences"] == [OWNER]
        assert manifest["metadata"]["labels"][names.LABEL_MANAGED_BY] == names.OPERATOR_NAME
        assert manifest["metadata"]["namespace"] == "shop"
    assert base64.b64decode(kinds["Secret"]["data"]["keys"]) == b"k1\n"


def test_relay_deployment_follows_the_env_contract_and_is_restricted():
    deployment = render.relay_deployment(channel(), "img:1", "abc", OWNER)
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "OTP_RELAY_LISTEN": "0.0.0.0:8080",
        "OTP_RELAY_ADMIN_LISTEN": "0.0.0.0:9090",
        "OTP_RELAY_GLOBAL_LIMIT": "50/1s",  # 100/s for the channel, 2 replicas, no shared store
        "OTP_RELAY_SMS_REGION": "ap",
        "OTP_RELAY_SUBACCOUNT": "shop_otp",
        "OTP_RELAY_API_KEY_FILE": "/var/run/otp-relay/sms/apikey",
        "OTP_RELAY_SIGNING_KEY_FILE": "/var/run/otp-relay/signing/keys",
        "OTP_RELAY_ENCODING": "AUTO",
        "OTP_RELAY_PER_RECIPIENT": "3/1h",
        "OTP_RELAY_SENDER": "ShopOTP",
        "OTP_RELAY_ALLOWED_COUNTRIES": "SG,MY",
        "OTP_RELAY_PATH_PREFIX": "/prod",
        "OTP_RELAY_RECEIPT_URL": "https://otp.shop.example/prod/v1/receipts",
        "OTP_RELAY_RECEIPT_TOKEN_FILE": "/var/run/otp-relay/receipts/tokens",
    }
    assert container["command"] == ["otp-relay"] and container["image"] == "img:1"
    assert pod["metadata"]["annotations"][names.ANNOTATION_SECRETS_CHECKSUM] == "abc"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "metrics": 9090}
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["spec"]["terminationGracePeriodSeconds"] > 5 + 6  # preStop + the relay's deadline
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["sms-api-key"]["secret"]["secretName"] == "eightbyeight"
    assert volumes["sms-api-key"]["secret"]["items"] == [{"key": "apikey", "path": "apikey"}]
    assert volumes["signing-key"]["secret"]["secretName"] == "prod-relay-signing-key"
    # No secret value ever sits in the pod spec, only file paths: render a channel with a real
    # signing key and look for it (raw and base64) in the Deployment, having seen it in the Secret.
    key = "sIgNiNg-KeY-0123456789abcdefghijklmnop"
    kinds = by_kind(render.render_children(channel(), image="img:1", signing_keys=(key,), secrets_checksum="abc",
                                           owner=OWNER))
    assert base64.b64decode(kinds["Secret"]["data"]["keys"]).decode() == key + "\n"
    rendered = repr(kinds["Deployment"])
    assert key not in rendered and base64.b64encode(key.encode()).decode()[:24] not in rendered


def test_single_replica_without_ingress_deletes_optional_children():
    spec = {**SPEC, "relay": {"replicas": 1, "publicUrl": "https://otp.example"}}
    children = render.render_children(
        parse_channel("shop", "prod", spec), image="i", signing_keys=("k",), secrets_checksum="c", owner=OWNER
    )
    assert set(by_kind(children)) == {"Secret", "Deployment", "Service", "NetworkPolicy"}
    assert {ref.kind for ref in children.delete} == {"Ingress", "PodDisruptionBudget"}


def test_ingress_routes_the_public_path_with_tls():
    ingress = render.relay_ingress(channel(), OWNER)
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "otp.shop.example"
    path, receipts = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/prod/v1/messages", "Exact")
    assert (receipts["path"], receipts["pathType"]) == ("/prod/v1/receipts", "Prefix")
    assert path["backend"]["service"]["port"] == {"name": "http"}
    assert render.relay_ingress(channel(publicUrl="https://otp.shop.example"), OWNER)["spec"]["rules"][0][
        "http"]["paths"][0]["path"] == "/v1/messages"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["otp.shop.example"], "secretName": "otp-tls"}]


def test_service_ports_lead_to_the_public_and_admin_listeners():
    service = render.relay_service(channel(), OWNER)
    assert {(p["name"], p["targetPort"]) for p in service["spec"]["ports"]} == {("http", "http"), ("metrics", "metrics")}


def test_state_store_makes_limits_channel_wide():
    spec = {**SPEC, "policy": {**SPEC["policy"], "globalLimit": {"limit": 30, "window": "1m"}},
            "relay": {**SPEC["relay"], "replicas": 3, "stateStore": {
                "url": "redis://redis.cache.svc:6379/2", "tls": True,
                "passwordSecretRef": {"name": "otp-redis"}}}}
    ch = parse_channel("shop", "prod", spec)
    assert "otp-redis" not in ch.referenced_secrets()  # mounted by the relay pods, never read by the operator
    deployment = render.relay_deployment(ch, "img:1", "abc", OWNER)
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["OTP_RELAY_STATE_URL"] == "rediss://redis.cache.svc:6379/2"
    assert env["OTP_RELAY_STATE_PASSWORD_FILE"] == "/var/run/otp-relay/state/password"
    assert env["OTP_RELAY_STATE_PREFIX"] == "otp-relay:shop/prod"
    assert env["OTP_RELAY_GLOBAL_LIMIT"] == "30/1m"  # shared: the channel's budget as is
    assert render.limits_scope(ch) == "channel"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state-password"]["secret"]["items"] == [{"key": "password", "path": "password"}]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["state-password"] == "/var/run/otp-relay/state"


def test_a_state_store_ca_from_a_config_map_is_what_the_relay_checks_the_store_against():
    store = {"url": "rediss://redis.cache.svc:6380", "caConfigMapRef": {"name": "redis-ca"}}
    ch = parse_channel("shop", "prod", {**SPEC, "relay": {**SPEC["relay"], "stateStore": store}})
    pod = render.relay_deployment(ch, "img:1", "abc", OWNER)["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["OTP_RELAY_STATE_CA_FILE"] == f"{mounts['state-ca']['mountPath']}/ca.crt"
    assert mounts["state-ca"]["readOnly"] is True
    assert volumes["state-ca"]["configMap"]["name"] == "redis-ca"
    assert volumes["state-ca"]["configMap"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert "redis-ca" not in ch.referenced_secrets()  # a ConfigMap the kubelet mounts; the operator never reads it
    # Without TLS there is no certificate to check: said, not silently ignored.
    plain = {"url": "redis://redis.cache.svc:6379", "caConfigMapRef": {"name": "redis-ca"}}
    with pytest.raises(SpecError, match="caConfigMapRef needs TLS"):
        parse_channel("shop", "prod", {**SPEC, "relay": {**SPEC["relay"], "stateStore": plain}})


def test_without_a_state_store_each_replica_gets_its_share_of_the_global_limit():
    spec = {**SPEC, "policy": {**SPEC["policy"], "globalLimit": {"limit": 10, "window": "1h30m"}},
            "relay": {**SPEC["relay"], "replicas": 3}}
    ch = parse_channel("shop", "prod", spec)
    assert render.global_limit_per_relay(ch) == "4/1h30m"  # ceil(10 / 3)
    assert render.limits_scope(ch) == "per-replica"


@pytest.mark.parametrize("url", ["http://redis:6379", "redis://user:pw@redis:6379", "redis:6379"])
def test_state_store_url_must_be_redis_without_credentials(url):
    spec = {**SPEC, "relay": {**SPEC["relay"], "stateStore": {"url": url}}}
    with pytest.raises(SpecError, match="spec.relay.stateStore.url must be redis://"):
        parse_channel("shop", "prod", spec)


@pytest.mark.parametrize("url", ["rediss://redis:6380?ssl_cert_reqs=none", "rediss://redis:6380/0?ssl_cert_reqs=none",
                                 "rediss://redis?ssl_check_hostname=false", "redis://redis:6379/0#x",
                                 "rediss://redis:6380/0?ssl_ca_certs=/etc/passwd"])
def test_state_store_url_options_that_could_turn_verification_off_are_refused(url):
    spec = {**SPEC, "relay": {**SPEC["relay"], "stateStore": {"url": url}}}
    with pytest.raises(SpecError) as error:
        parse_channel("shop", "prod", spec)
    assert "must not carry a query" in str(error.value) and "ssl_cert_reqs=none" in str(error.value)


@pytest.mark.parametrize(("url", "host_port"), [("redis://Redis.Cache.svc", "redis.cache.svc:6379"),
                                                ("rediss://10.0.0.5:6380/3", "10.0.0.5:6380")])
def test_state_store_host_port_is_what_the_allow_list_sees(url, host_port):
    spec = {**SPEC, "relay": {**SPEC["relay"], "stateStore": {"url": url}}}
    assert parse_channel("shop", "prod", spec).relay.state_store.host_port == host_port


@pytest.mark.parametrize(("relay", "scope"), [
    ({"replicas": 2}, "per-replica only: without spec.relay.stateStore each of the 2 replicas remembers only"),
    ({"replicas": 1}, "per-replica only: without spec.relay.stateStore the replica's memory is lost"),
    ({"replicas": 0}, "none: no relay replica runs"),
    ({"replicas": 3, "stateStore": {"url": "redis://r:6379"}}, "channel: the replicas share spec.relay.stateStore"),
])
def test_status_says_what_at_most_one_sms_covers(relay, scope):
    assert render.at_most_one_sms(channel(**relay)).startswith(scope)


def test_the_state_store_password_secret_needs_the_opt_in_label():
    from otp_operator.secrets import check_state_password

    ref = SecretKeyRef("db-credentials", "password")
    with pytest.raises(SecretProblem) as refused:
        check_state_password({"name": "db-credentials", "labels": {"app": "db"}}, ref, "shop")
    assert refused.value.reason == "SecretNotAllowed"
    assert "shop/db-credentials" in refused.value.message and "otprelay.io/state-store-password=allowed" in \
        refused.value.message and "spec.relay.stateStore.passwordSecretRef" in refused.value.message
    with pytest.raises(SecretProblem) as wrong_value:
        check_state_password({"labels": {names.LABEL_STATE_STORE_PASSWORD: "true"}}, ref, "shop")
    assert wrong_value.value.reason == "SecretNotAllowed"
    # the operator's own labelling of referenced Secrets is not the opt-in
    with pytest.raises(SecretProblem):
        check_state_password({"labels": {names.LABEL_SECRET: names.SECRET_REFERENCED}}, ref, "shop")
    with pytest.raises(SecretProblem) as missing:
        check_state_password(None, ref, "shop")
    assert missing.value.reason == "SecretNotFound"
    check_state_password({"labels": {names.LABEL_STATE_STORE_PASSWORD: "allowed"}}, ref, "shop")
    assert status.STALLED_REASONS >= {"SecretNotAllowed", "DisallowedEndpoint"}


def test_custom_resources_replace_defaults():
    deployment = render.relay_deployment(channel(resources={"limits": {"cpu": "1"}}), "i", "c", OWNER)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "1"}}


def _deployment(checksum_="c", replicas=2, available=2, updated=2, total=2, generation=1, observed=1):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {names.ANNOTATION_SECRETS_CHECKSUM: checksum_}}}},
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }


@pytest.mark.parametrize(
    "deployment, expected",
    [
        (None, False),
        (_deployment(), True),
        (_deployment(checksum_="old"), False),
        (_deployment(observed=0), False),
        (_deployment(updated=1, total=3), False),
        (_deployment(available=1), False),
    ],
)
def test_relay_rollout(deployment, expected):
    assert render.relay_rollout(deployment, "c").rolled_out is expected


def _secret(**data):
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def test_secret_value_names_what_is_missing_without_values():
    ref = SecretKeyRef("eightbyeight", "apikey")
    assert secret_value(_secret(apikey="s3cr3t\n"), ref, "shop") == "s3cr3t"
    with pytest.raises(SecretProblem) as missing:
        secret_value(None, ref, "shop")
    assert missing.value.reason == "SecretNotFound" and "shop/eightbyeight" in missing.value.message
    with pytest.raises(SecretProblem) as no_key:
        secret_value(_secret(other="s3cr3t"), ref, "shop")
    assert no_key.value.reason == "SecretKeyMissing" and "'apikey'" in no_key.value.message
    # The Secret holds the value base64-encoded: neither form may reach the message.
    assert not [form for form in encodings("s3cr3t") if form in no_key.value.message]


def test_checksum_changes_with_any_value_and_hides_it():
    sms, signing = "Zm9vYmFyYmF6cXV4MTIz", "c2lnbmluZy1rZXktNDI"  # key-like values (hex and base64 alphabets)
    base = checksum({"sms": sms, "signing": signing})
    assert base == checksum({"signing": signing, "sms": sms})
    assert base != checksum({"sms": sms + "2", "signing": signing})
    assert base != checksum({"sms": sms, "signing": signing + "\nc"})
    assert re.fullmatch(r"[0-9a-f]{32}", base)  # a digest: no room for a value or a piece of one
    assert not [form[:8] for value in (sms, signing) for form in encodings(value) if form[:8] in base]


def test_signing_keys_parse_lines():
    assert signing_keys(_secret(keys="k1\n\nk2\n")) == ["k1", "k2"]
    assert signing_keys(None) == []


def _keygen():
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


def test_rotation_walks_add_update_retire():
    keys, state = ["old"], rotation.SigningState(rotation.STABLE, "", 0)
    # No request: stable.
    p = rotation.plan(keys, state, None, True, 10, 30, _keygen())
    assert p.keys == ("old",) and p.auth0_key == "old" and p.event is None
    # Requested: add a key; Auth0 keeps the old one.
    p = rotation.plan(keys, state, "r1", True, 10, 30, _keygen())
    assert p.keys == ("old", "new1") and p.auth0_key == "old" and p.state.phase == rotation.KEY_ADDED
    # Relay not yet rolled out with both keys: wait, Auth0 keeps old.
    p = rotation.plan(list(p.keys), p.state, "r1", False, 11, 30, _keygen())
    assert p.auth0_key == "old" and p.state.phase == rotation.KEY_ADDED
    # Rolled out: Auth0 gets the new key; both still accepted.
    p = rotation.plan(list(p.keys), p.state, "r1", True, 12, 30, _keygen())
    assert p.keys == ("old", "new1") and p.auth0_key == "new1" and p.state.phase == rotation.AUTH0_UPDATING
    state = rotation.after_auth0_synced(p, 13)
    assert state.phase == rotation.AUTH0_UPDATED
    # Grace for in-flight Auth0 executions signed with the old key.
    p = rotation.plan(["old", "new1"], state, "r1", True, 20, 30, _keygen())
    assert p.keys == ("old", "new1") and rotation.retry_after(p, 20, 30) == pytest.approx(23)
    p = rotation.plan(["old", "new1"], state, "r1", True, 44, 30, _keygen())
    assert p.keys == ("new1",) and p.state.phase == rotation.STABLE and p.state.handled_request == "r1"
    # The same annotation value does not rotate again.
    assert rotation.plan(["new1"], p.state, "r1", True, 50, 30, _keygen()).keys == ("new1",)


def test_auth0_gets_the_new_key_only_after_running_pods_could_see_it():
    """A rolled-out Deployment is not proof: a running pod sees a changed Secret only when the
    kubelet refreshes it. Auth0 switches keys once that propagation time has passed."""
    p = rotation.plan(["old"], rotation.SigningState(rotation.STABLE, "", 0), "r1", True, 100, 30, _keygen(), 60)
    assert p.state.phase == rotation.KEY_ADDED and p.state.since == 100
    p = rotation.plan(list(p.keys), p.state, "r1", True, 159, 30, _keygen(), 60)
    assert p.auth0_key == "old" and p.state.phase == rotation.KEY_ADDED
    assert rotation.retry_after(p, 159, 30, 60) == pytest.approx(1)
    p = rotation.plan(list(p.keys), p.state, "r1", True, 160, 30, _keygen(), 60)
    assert p.auth0_key == "new1" and p.state.phase == rotation.AUTH0_UPDATING


def test_rotation_resumes_after_a_crash_before_status_was_written():
    # Secret already has two keys but status still says Stable (operator killed in between).
    p = rotation.plan(["old", "new"], rotation.SigningState(), "r9", False, 5, 30, _keygen())
    assert p.keys == ("old", "new") and p.auth0_key == "old" and p.state.handled_request == "r9"


def test_first_key_is_generated():
    p = rotation.plan([], rotation.SigningState(), None, False, 1, 30, _keygen())
    assert p.keys == ("new1",) and p.auth0_key == "new1"


def test_conditions_ready_and_kstatus():
    relay_ok = status.true("Available", "2/2 relay replicas available")
    auth0_ok = status.true("Synced", "phone-provider synced")
    conds = {c["type"]: c for c in status.conditions(None, 3, relay_ok, auth0_ok, "T1")}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["observedGeneration"] == 3
    assert "Reconciling" not in conds and "Stalled" not in conds

    waiting = status.false("Progressing", "waiting for relay replicas: 0/2 available")
    conds2 = {c["type"]: c for c in status.conditions(list(conds.values()), 4, waiting,
                                                        status.false("WaitingForRelay", "w"), "T2")}
    assert conds2["Ready"]["status"] == "False" and conds2["Ready"]["reason"] == "Progressing"
    assert conds2["Ready"]["lastTransitionTime"] == "T2"
    assert conds2["Reconciling"]["status"] == "True" and "Stalled" not in conds2

    conflict = status.false("Auth0Conflict", "owned by shop/other")
    conds3 = {c["type"]: c for c in status.conditions(list(conds2.values()), 4, relay_ok, conflict, "T3")}
    assert conds3["Ready"]["reason"] == "Auth0Conflict" and conds3["Stalled"]["status"] == "True"
    assert conds3["Ready"]["lastTransitionTime"] == "T2"  # still False: no transition
    assert conds3["RelayAvailable"]["lastTransitionTime"] == "T3"
    assert "Reconciling" not in conds3


def test_suspended_keeps_ready_status_and_says_why():
    previous = status.conditions(None, 1, status.true("A", "a"), status.true("S", "s"), "T1")
    conds = {c["type"]: c for c in status.conditions(previous, 2, status.KEPT, status.KEPT, "T2", status.KEPT,
                                                     status.KEPT, suspended=True)}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "Suspended"
    assert set(conds) == {"Ready", "RelayAvailable", "Auth0Synced"}


def test_cached_objects_keep_what_reconciles_read():
    from otp_operator.runtime import ObjectCache, child_token

    cache = ObjectCache()
    deployment = _deployment()
    deployment["metadata"].update(name="prod-relay", namespace="shop", uid="u1", resourceVersion="7",
                                  managedFields=[{"manager": "x" * 1000}])
    cache.observed("Deployment", "shop", "prod-relay", deployment)
    cached = cache.get("Deployment", "shop", "prod-relay")
    assert "managedFields" not in cached["metadata"]
    assert render.relay_rollout(cached, "c") == render.relay_rollout(deployment, "c")
    assert child_token(cached) == child_token(deployment) == ("u1", "1")
    cache.observed("Deployment", "shop", "prod-relay", None)
    assert cache.known("Deployment", "shop", "prod-relay") and cache.get("Deployment", "shop", "prod-relay") is None


def _versioned(rv: str) -> dict:
    return {"metadata": {"name": "s", "namespace": "shop", "resourceVersion": rv}, "data": {"k": rv}}


def test_cache_orders_by_arrival_not_by_resource_version():
    """resourceVersions are opaque: a newer one may compare lower (another etcd, a restore)."""
    from otp_operator.runtime import ObjectCache

    cache = ObjectCache()
    cache.observed("Deployment", "shop", "s", _versioned("900"))
    cache.observed("Deployment", "shop", "s", _versioned("1000"))
    assert cache.get("Deployment", "shop", "s")["data"] == {"k": "1000"}
    cache.observed("Deployment", "shop", "s", _versioned("99"))  # an event: the newest, whatever its number
    assert cache.get("Deployment", "shop", "s")["data"] == {"k": "99"}
    # A read that was in flight while an event arrived is older than that event: dropped.
    marker = cache.marker("Deployment", "shop", "s")
    cache.observed("Deployment", "shop", "s", _versioned("abc"))
    cache.stored("Deployment", "shop", "s", _versioned("zzz"), marker)
    assert cache.get("Deployment", "shop", "s")["data"] == {"k": "abc"}
    marker = cache.marker("Deployment", "shop", "s")
    cache.stored("Deployment", "shop", "s", None, marker)  # a read with no event meanwhile: it is the newest
    assert cache.known("Deployment", "shop", "s") and cache.get("Deployment", "shop", "s") is None


def test_cache_forgets_what_no_event_or_read_confirmed_lately():
    """A watch reconnecting after its history expired never reports deletions in between: an
    entry not confirmed within the TTL is read again instead of trusted."""
    from otp_operator.runtime import ObjectCache

    now = [0.0]
    cache = ObjectCache(ttl=300.0, clock=lambda: now[0])
    cache.observed("Secret", "shop", "s", _versioned("1"))
    now[0] = 299.0
    assert cache.known("Secret", "shop", "s")
    now[0] = 301.0
    assert not cache.known("Secret", "shop", "s")
    cache.observed("Secret", "shop", "s", _versioned("2"))
    assert cache.known("Secret", "shop", "s")


@pytest.mark.parametrize("meta, owned", [
    ({"ownerReferences": [{"uid": "uid-1", "controller": True}]}, True),
    ({"ownerReferences": [{"uid": "other", "controller": True}],
      "labels": {names.LABEL_MANAGED_BY: names.OPERATOR_NAME, names.LABEL_CHANNEL: "prod"}}, False),
    ({"labels": {names.LABEL_MANAGED_BY: names.OPERATOR_NAME, names.LABEL_CHANNEL: "prod"}}, True),
    ({"labels": {names.LABEL_MANAGED_BY: names.OPERATOR_NAME, names.LABEL_CHANNEL: "other"}}, False),
    ({"labels": {"app": "prod-relay"}}, False),
    ({}, False),
])
def test_only_own_children_are_adopted(meta, owned):
    from otp_operator.reconcile import owned_by

    assert owned_by({"metadata": meta}, "uid-1", "prod") is owned


def test_deletion_decision():
    from otp_operator import cleanup

    recorded = {"integration": "phone-provider", "name": "old-name", "actionId": "act_1", "providerId": "pro_1"}
    decision = cleanup.decide(channel(), {}, recorded)
    assert isinstance(decision, cleanup.Remove)
    assert decision.targets == (("phone-provider", "old-name"), ("phone-provider", "otp-relay-shop-prod"))
    orphan = cleanup.decide(parse_channel("shop", "prod", {**SPEC, "deletionPolicy": "Orphan"}), {}, recorded)
    assert isinstance(orphan, cleanup.Leave) and not orphan.warning and "act_1" in orphan.message
    suspended = cleanup.decide(parse_channel("shop", "prod", {**SPEC, "suspend": True}), {}, recorded)
    assert isinstance(suspended, cleanup.Leave) and suspended.warning and "spec.suspend" in suspended.message
    abandoned = cleanup.decide(channel(), {names.ANNOTATION_ABANDON_CLEANUP: "true"}, recorded)
    assert isinstance(abandoned, cleanup.Leave) and abandoned.reason == "CleanupAbandoned"
    assert "pro_1" in abandoned.message
    assert cleanup.needs_credentials(channel())
    assert not cleanup.needs_credentials(parse_channel("shop", "prod", {**SPEC, "deletionPolicy": "Orphan"}))
    with pytest.raises(SpecError, match="deletionPolicy"):
        parse_channel("shop", "prod", {**SPEC, "deletionPolicy": "Keep"})


def test_peering_priorities_differ_per_replica():
    from otp_operator.cli import peering_priority

    drawn = {peering_priority("otp", None) for _ in range(200)}
    assert len(drawn) == 200 and min(drawn) >= 1
    assert peering_priority("otp", 7) == 7
    assert peering_priority(None, None) == 0


def test_backoff_is_jittered():
    from otp_operator.runtime import jittered

    delays = {round(jittered(10.0), 6) for _ in range(50)}
    assert len(delays) > 40 and all(8.0 <= d <= 12.0 for d in delays)


@pytest.mark.parametrize("encode", [
    lambda s: s, lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.b64encode((s + "\n").encode()).decode(), lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
])
def test_the_operator_log_scan_finds_secrets_raw_and_base64(tmp_path, encode):
    from otp_sandbox.processes import OperatorProcess

    secret = "s3cr3t-value-~~>?"
    process = OperatorProcess(tmp_path / "kubeconfig", tmp_path / "ca.pem", tmp_path / "operator.log")
    (tmp_path / "operator.log").write_text(f"INFO all fine\nDEBUG body={{'data': {{'k': '{encode(secret)}'}}}}\n")
    with pytest.raises(AssertionError, match=r"secret #0 \(len 17\) found in the operator log") as found:
        process.assert_no_secrets_logged([secret])
    assert not [form for form in encodings(secret) if form[:4] in str(found.value)]  # not even a prefix
    process.assert_no_secrets_logged(["another-value"])


def test_after_an_apply_only_changes_by_others_leave_a_child_to_repair():
    """The watch event of our own write can arrive before the write's answer (when the memory has
    no token to compare it with yet). Judged again after the apply, it leaves the channel clean,
    so a new channel's children are applied once, not twice; a later edit, a deletion or a
    re-creation by someone else still marks the child for repair."""
    from types import SimpleNamespace

    from otp_operator.reconcile import _changed_by_others
    from otp_operator.runtime import ChildKey, ChildrenMemory, ObjectCache

    def obj(uid: str, generation: int | None, rv: str) -> dict:
        meta = {"name": "prod-relay", "namespace": "shop", "uid": uid, "resourceVersion": rv}
        if generation is not None:
            meta["generation"] = generation
        return {"metadata": meta}

    rt = SimpleNamespace(cache=ObjectCache())
    mem = ChildrenMemory(tokens={ChildKey("Deployment/prod-relay"): ("u1", "2"), ChildKey("Secret/prod-relay"): ("u2", "41")})
    deployment = {"kind": "Deployment", "metadata": {"name": "prod-relay", "namespace": "shop"}}
    secret = {"kind": "Secret", "metadata": {"name": "prod-relay", "namespace": "shop"}}

    assert not _changed_by_others(rt, mem, deployment)  # no event yet
    for seen, changed in [
        (obj("u1", 2, "10"), False),  # our own write
        (obj("u1", 1, "9"), False),  # from before our write, which replaced it
        (obj("u1", 3, "11"), True),  # edited after our write
        (obj("u9", 1, "12"), True),  # deleted and re-created by someone else
        (None, True),  # deleted
    ]:
        rt.cache.observed("Deployment", "shop", "prod-relay", seen)
        assert _changed_by_others(rt, mem, deployment) is changed, seen
    for seen, changed in [(obj("u2", None, "41"), False), (obj("u2", None, "42"), True)]:
        rt.cache.observed("Secret", "shop", "prod-relay", seen)  # no generation: the version must match
        assert _changed_by_others(rt, mem, secret) is changed, seen


def test_every_kopf_handler_runs_on_the_event_loop():
    """kopf runs plain functions in a thread pool; the handlers set the channel loops' asyncio
    Events and share the object cache, neither of which is safe from another thread."""
    import inspect

    import kopf
    import otp_operator.handlers  # noqa: F401  registers the handlers

    registry = kopf.get_default_registry()
    handlers = [handler.fn for part in (registry._activities, registry._indexing, registry._watching,
                                        registry._spawning, registry._changing)
                for handler in part.get_all_handlers()
                if handler.fn.__module__ == "otp_operator.handlers"]
    assert len(handlers) >= 13
    assert [fn.__name__ for fn in handlers if not inspect.iscoroutinefunction(fn)] == []


def test_a_budget_the_relays_cannot_hold_without_a_store_is_refused():
    """Each relay keeps its keys in process without relay.stateStore and would refuse to start;
    the channel says why, naming the numbers."""
    spec = {**SPEC, "policy": {**SPEC["policy"], "globalLimit": {"limit": 400, "window": "1s"}}}
    with pytest.raises(SpecError) as error:
        render.check_store_capacity(parse_channel("shop", "prod", spec))
    assert "400/1s" in str(error.value) and "361,600" in str(error.value) and "200,000" in str(error.value)
    render.check_store_capacity(channel())  # the default budget fits
    shared = {**spec, "relay": {**SPEC["relay"], "stateStore": {"url": "redis://redis.shop:6379"}}}
    render.check_store_capacity(parse_channel("shop", "prod", shared))  # Redis holds any budget


def test_the_pumping_rules_of_spec_policy_become_relay_flags():
    """Set rules reach the relay as its variables (and the relay accepts them); unset ones are
    not rendered, so the relay's defaults stay their one place."""
    from otp_relay import config as relay_config  # noqa: PLC0415

    assert not [e for e in render.relay_env(channel()) if e["name"] in (
        "OTP_RELAY_PER_PREFIX", "OTP_RELAY_COUNTRY_HOUR", "OTP_RELAY_MONITOR_RULES", "OTP_RELAY_CODE_VALIDITY")]
    policy = {**SPEC["policy"], "perPrefix": {"limit": 10, "window": "30m"},
              "countryHourly": {"limit": 500, "window": "1h"}, "countryDaily": {"limit": 5000, "window": "24h"},
              "perClientIp": {"limit": 5, "window": "1h"}, "maxSegments": 2, "codeValidity": "10m",
              "allowNumberTypes": ["VOIP"], "allowNonGeographic": [882], "monitorRules": ["prefix", "client_ip"]}
    env = {e["name"]: e["value"] for e in render.relay_env(parse_channel("shop", "prod", {**SPEC, "policy": policy}))
           if "value" in e}
    assert {k: env[k] for k in env if k.startswith("OTP_RELAY_") and k[10:] in (
        "PER_PREFIX", "COUNTRY_HOUR", "COUNTRY_DAY", "PER_CLIENT_IP", "MAX_SEGMENTS", "CODE_VALIDITY",
        "ALLOW_NUMBER_TYPES", "ALLOW_NON_GEOGRAPHIC", "MONITOR_RULES")} == {
        "OTP_RELAY_PER_PREFIX": "10/30m", "OTP_RELAY_COUNTRY_HOUR": "500/1h", "OTP_RELAY_COUNTRY_DAY": "5000/24h",
        "OTP_RELAY_PER_CLIENT_IP": "5/1h", "OTP_RELAY_MAX_SEGMENTS": "2", "OTP_RELAY_CODE_VALIDITY": "10m",
        "OTP_RELAY_ALLOW_NUMBER_TYPES": "VOIP", "OTP_RELAY_ALLOW_NON_GEOGRAPHIC": "882",
        "OTP_RELAY_MONITOR_RULES": "prefix,client_ip"}
    settings = relay_config.load([], {**env, "OTP_RELAY_API_KEY_FILE": "/k", "OTP_RELAY_SIGNING_KEY_FILE": "/s"})
    assert (settings.per_prefix, settings.max_segments, settings.code_validity, settings.allowed_non_geographic,
            settings.monitor_rules) == (relay_config.Rate(10, 1800), 2, 600, {882}, {"prefix", "client_ip"})
    with pytest.raises(SpecError, match="spec.policy.perPrefix.window"):
        parse_channel("shop", "prod", {**SPEC, "policy": {**SPEC["policy"], "perPrefix": {"limit": 1, "window": "1d"}}})


def test_each_missing_secret_has_its_own_grace():
    """The 8x8 key missing for a while, then back, must not use up the grace of Auth0 credentials
    that go missing later: each referenced Secret's wait starts when it went missing."""
    from otp_operator import reconcile  # noqa: PLC0415
    from otp_operator.runtime import ChannelMemory  # noqa: PLC0415
    from otp_operator.secrets import SECRET_NOT_FOUND  # noqa: PLC0415

    now = 1000.0
    mem, gone = ChannelMemory(), SecretProblem(SECRET_NOT_FOUND, "Secret 'x' not found")
    assert reconcile._secret_verdict(mem, gone, reconcile.SMS_API_KEY, 60, now).reason == status.WAITING_FOR_SECRET
    now += 120
    assert reconcile._secret_verdict(mem, gone, reconcile.SMS_API_KEY, 60, now).reason == SECRET_NOT_FOUND
    reconcile._secret_found(mem, reconcile.SMS_API_KEY)  # restored
    credentials = reconcile._secret_verdict(mem, gone, reconcile.AUTH0_CREDENTIALS, 60, now)
    assert credentials.reason == status.WAITING_FOR_SECRET and "60s more" in credentials.message
    now += 30
    assert reconcile._recheck_secret(mem, gone, reconcile.AUTH0_CREDENTIALS, 60, now) is not None
    assert "30s more" in reconcile._secret_verdict(mem, gone, reconcile.AUTH0_CREDENTIALS, 60, now).message
