"""No exfiltration by spec: secrets go only to Auth0 tenants and 8x8, or where the administrator allows."""

from __future__ import annotations

import pytest
from kubernetes import client
from otp_operator import names
from otp_operator.cli import build_parser
from otp_operator.endpoints import (
    ALLOW_AUTH0_DOMAIN_ENV,
    ALLOW_RELAY_IMAGE_ENV,
    ALLOW_SMS_BASE_URL_ENV,
    ALLOW_STATE_STORE_ENV,
    DisallowedEndpoint,
    EndpointPolicy,
    check_auth0_domain,
    check_channel,
    check_sms_base_url,
)
from otp_operator.spec import parse_channel
from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS, OperatorProcess

from tests.fixtures.operator import TEST_OPERATOR_ARGS
from tests.support.channels import condition, create_channel, get_channel, make_secret, wait_condition
from tests.support.waiting import wait_for

NOTHING_EXTRA = EndpointPolicy()


@pytest.mark.parametrize("domain", [
    "shop.auth0.com", "shop.eu.auth0.com", "shop.us.auth0.com", "shop.au.auth0.com", "shop.jp.auth0.com",
    "Shop-Dev.EU.auth0.com", "a.auth0.com",
])
def test_auth0_tenant_domains_are_accepted(domain: str) -> None:
    check_auth0_domain(domain, NOTHING_EXTRA)


@pytest.mark.parametrize("domain", [
    "evil.example", "auth0.com", "shop.auth0.com.evil.example", "shop.auth0.com:8443", "shop.xx.auth0.com",
    "a.b.auth0.com", "shop.eu.auth0.com.", "evilauth0.com", "localhost:8443", "127.0.0.1",
])
def test_other_domains_are_refused_naming_the_field_and_the_flag(domain: str) -> None:
    with pytest.raises(DisallowedEndpoint) as error:
        check_auth0_domain(domain, NOTHING_EXTRA)
    assert error.value.reason == "DisallowedEndpoint"
    assert "spec.auth0.domain" in str(error.value) and "--allow-auth0-domain" in str(error.value)


@pytest.mark.parametrize("url", [
    "", "https://sms.8x8.com", "https://sms.us.8x8.com/", "https://sms.8x8.uk", "https://sms.8x8.id:443",
    "https://SMS.8x8.com",
])
def test_8x8_hosts_over_https_are_accepted(url: str) -> None:
    check_sms_base_url(url, NOTHING_EXTRA)


@pytest.mark.parametrize("url", [
    "http://sms.8x8.com", "https://sms.8x8.com:8443", "https://sms.8x8.com.evil.example",
    "https://evil.example", "https://sms.8x8.com@evil.example", "https://user@sms.8x8.com",
    "https://evil.example/?x=sms.8x8.com", "https://127.0.0.1:9000", "ftp://sms.8x8.com",
])
def test_other_base_urls_are_refused_naming_the_field_and_the_flag(url: str) -> None:
    with pytest.raises(DisallowedEndpoint) as error:
        check_sms_base_url(url, NOTHING_EXTRA)
    assert "spec.sms.baseUrl" in str(error.value) and "--allow-sms-base-url" in str(error.value)


def test_the_allow_list_adds_glob_patterns_on_host_and_origin() -> None:
    policy = EndpointPolicy(("localhost:*", "auth.shop.example"), ("https://127.0.0.1:*", "http://proxy.internal"))
    for domain in ("localhost:8443", "auth.shop.example", "Auth.Shop.Example", "shop.auth0.com"):
        check_auth0_domain(domain, policy)
    for url in ("https://127.0.0.1:9000", "https://127.0.0.1:9000/base", "http://proxy.internal/x", "https://sms.8x8.com"):
        check_sms_base_url(url, policy)
    for domain in ("localhost", "auth.shop.example:443", "x.auth.shop.example"):
        with pytest.raises(DisallowedEndpoint):
            check_auth0_domain(domain, policy)
    # The glob sees scheme://host[:port] only: no userinfo tricks, no other scheme, no other host.
    for url in ("http://127.0.0.1:9000", "https://127.0.0.1:9000@evil.example", "https://proxy.internal",
                "http://proxy.internal:8080"):
        with pytest.raises(DisallowedEndpoint):
            check_sms_base_url(url, policy)


def test_the_allow_list_comes_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_AUTH0_DOMAIN_ENV, "a.example, b.example")
    monkeypatch.setenv(ALLOW_SMS_BASE_URL_ENV, "https://proxy.internal")
    args = build_parser().parse_args(["run", "--allow-auth0-domain", "c.example"])
    assert args.allow_auth0_domain == ["a.example", "b.example", "c.example"]
    assert args.allow_sms_base_url == ["https://proxy.internal"]
    monkeypatch.setenv(ALLOW_STATE_STORE_ENV, "redis.cache.svc:6379")
    monkeypatch.setenv(ALLOW_RELAY_IMAGE_ENV, "registry.internal/otp-relay-operator")
    args = build_parser().parse_args(["run", "--allow-state-store", "valkey.cache.svc:6379"])
    assert args.allow_state_store == ["redis.cache.svc:6379", "valkey.cache.svc:6379"]
    assert args.allow_relay_image == ["registry.internal/otp-relay-operator"]


OPERATOR_IMAGE = "ghcr.io/otp-relay-operator/otp-relay-operator:0.4.0"
CHANNEL = {
    "auth0": {"domain": "shop.eu.auth0.com", "credentialsSecretRef": {"name": "auth0-mgmt"}},
    "sms": {"subaccountId": "shop_otp", "apiKeySecretRef": {"name": "eightbyeight"}},
    "relay": {"publicUrl": "https://otp.shop.example"},
}


def channel_with(store_url: str | None = None, image: str | None = None):
    relay = dict(CHANNEL["relay"])
    if store_url is not None:
        relay["stateStore"] = {"url": store_url, "passwordSecretRef": {"name": "otp-redis"}}
    if image is not None:
        relay["podTemplate"] = {"spec": {"container": {"image": image}}}
    return parse_channel("shop", "prod", {**CHANNEL, "relay": relay})


@pytest.mark.parametrize("url", ["redis://attacker.example:6379", "redis://redis.cache.svc:6379",
                                 "rediss://10.0.0.5", "redis://localhost:6379/0"])
def test_no_state_store_is_allowed_until_the_administrator_lists_it(url: str) -> None:
    with pytest.raises(DisallowedEndpoint) as error:
        check_channel(channel_with(store_url=url), NOTHING_EXTRA, OPERATOR_IMAGE)
    message = str(error.value)
    assert error.value.reason == "DisallowedEndpoint"
    assert "spec.relay.stateStore.url" in message and "--allow-state-store" in message and "allowed: none" in message


def test_state_stores_are_matched_on_host_and_port() -> None:
    policy = EndpointPolicy(state_stores=("redis.cache.svc:6379", "*.redis.internal:6380"))
    for url in ("redis://redis.cache.svc:6379", "redis://redis.cache.svc", "rediss://REDIS.cache.svc/2",
                "rediss://a.redis.internal:6380"):
        check_channel(channel_with(store_url=url), policy, OPERATOR_IMAGE)
    for url in ("redis://redis.cache.svc:6380", "redis://redis.cache.svc.evil.example:6379",
                "redis://a.redis.internal", "redis://evil.example:6380"):
        with pytest.raises(DisallowedEndpoint) as error:
            check_channel(channel_with(store_url=url), policy, OPERATOR_IMAGE)
        assert "'redis.cache.svc:6379', '*.redis.internal:6380'" in str(error.value), "names the allow-list"


@pytest.mark.parametrize("image", ["", OPERATOR_IMAGE, "ghcr.io/otp-relay-operator/otp-relay-operator:0.5.0",
                                   "ghcr.io/otp-relay-operator/otp-relay-operator@sha256:" + "a" * 64])
def test_the_operator_s_own_relay_repository_is_allowed(image: str) -> None:
    check_channel(channel_with(image=image), NOTHING_EXTRA, OPERATOR_IMAGE)


@pytest.mark.parametrize("image", [
    "attacker.example/otp-relay-operator:0.4.0", "ghcr.io/otp-relay-operator/otp-relay-operator-evil:1",
    "ghcr.io/otp-relay-operator/otp-relay-operator/sub:1", "ghcr.io/otp-relay-operator/otp-relay-operator:1 x",
    "ghcr.io/Otp-Relay-Operator/otp-relay-operator:1", "busybox",
])
def test_other_relay_images_are_refused_naming_the_field_and_the_allow_list(image: str) -> None:
    with pytest.raises(DisallowedEndpoint) as error:
        check_channel(channel_with(image=image), NOTHING_EXTRA, OPERATOR_IMAGE)
    message = str(error.value)
    assert "spec.relay.podTemplate.spec.container.image" in message and "--allow-relay-image" in message
    assert "'ghcr.io/otp-relay-operator/otp-relay-operator'" in message


def test_the_administrator_allows_more_relay_repositories() -> None:
    policy = EndpointPolicy(relay_images=("registry.internal:5000/mirror/*",))
    check_channel(channel_with(image="registry.internal:5000/mirror/otp-relay-operator:0.4.0"), policy,
                  OPERATOR_IMAGE)
    with pytest.raises(DisallowedEndpoint):
        check_channel(channel_with(image="registry.internal:5000/other/otp-relay-operator:0.4.0"), policy,
                      OPERATOR_IMAGE)


@pytest.mark.cluster
def test_a_disallowed_domain_gets_no_credentials_until_the_operator_allows_it(
        k8s_api, namespace, kubeconfig, ssl_cert_file, otpchannel_crd, tmp_path, run_operator, setup_channel,
        sms_emulator):
    ch = setup_channel(namespace)
    without_allow_list = [a for a in TEST_OPERATOR_ARGS if a not in SANDBOX_ENDPOINT_ARGS]
    strict = OperatorProcess(kubeconfig, ssl_cert_file, tmp_path / "strict.log", without_allow_list).start()
    try:
        ch.tenant.clear_requests()
        create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
        channel = wait_condition(k8s_api, namespace, "prod", "Stalled", "True", timeout=90)
        ready = condition(channel, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DisallowedEndpoint")
        assert "spec.auth0.domain" in ready["message"] and "--allow-auth0-domain" in ready["message"]
        assert channel["status"]["observedGeneration"] == channel["metadata"]["generation"]
    finally:
        strict.stop()
    # Status was written after the check, so by now the tenant would have seen a token request.
    assert ch.tenant.requests() == [], "the operator contacted a domain it does not allow"
    with pytest.raises(client.ApiException) as error:
        client.AppsV1Api(k8s_api).read_namespaced_deployment(names.relay_name("prod"), namespace)
    assert error.value.status == 404, "the relay (holding the 8x8 key) was deployed for a disallowed base URL"

    # The same channel with the sandbox's allow-list: Ready.
    run_operator()
    channel = wait_condition(k8s_api, namespace, "prod", timeout=120)
    assert not condition(channel, "Stalled")
    assert get_channel(k8s_api, namespace, "prod")["status"]["auth0"]["actionId"]


@pytest.mark.cluster
def test_a_foreign_image_store_or_password_secret_gets_nothing_applied(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator):
    ch = setup_channel(namespace)
    make_secret(k8s_api, namespace, "db-credentials", {"password": "not-for-the-relay"})  # no opt-in label
    make_secret(k8s_api, namespace, "otp-redis", {"password": "for-the-relay"})
    core = client.CoreV1Api(k8s_api)
    core.patch_namespaced_secret("otp-redis", namespace, {"metadata": {"labels": {
        names.LABEL_STATE_STORE_PASSWORD: names.STATE_STORE_PASSWORD_ALLOWED}}})
    run_operator("--allow-state-store", "redis.cache.svc:6379")
    store = {"url": "redis://redis.cache.svc:6379", "passwordSecretRef": {"name": "otp-redis"}}
    channels = {
        "foreign-image": ({"podTemplate": {"spec": {"container": {"image": "attacker.example/otp-relay:dev"}}}},
                          "DisallowedEndpoint", "spec.relay.podTemplate.spec.container.image"),
        "foreign-store": ({"stateStore": {**store, "url": "redis://attacker.example:6379"}},
                          "DisallowedEndpoint", "spec.relay.stateStore.url"),
        "foreign-secret": ({"stateStore": {**store, "passwordSecretRef": {"name": "db-credentials"}}},
                           "SecretNotAllowed", "spec.relay.stateStore.passwordSecretRef"),
        "allowed": ({"stateStore": store, "podTemplate": {"spec": {"container": {"image": "example.test/otp-relay:v2"}}}},
                    None, None),
    }
    for name, (relay, _, _) in channels.items():
        manifest = ch.manifest(sms_emulator.base_url)
        manifest["metadata"]["name"] = name
        manifest["spec"]["relay"].update(relay)
        create_channel(k8s_api, manifest)
    apps, networking = client.AppsV1Api(k8s_api), client.NetworkingV1Api(k8s_api)
    # The allowed one is deployed with the opted-in Secret and the allowed image ...
    deployment = wait_for(lambda: _find(apps.read_namespaced_deployment, names.relay_name("allowed"), namespace),
                          timeout=90)
    pod = deployment.spec.template.spec
    assert pod.containers[0].image == "example.test/otp-relay:v2"
    assert {v.secret.secret_name for v in pod.volumes if v.secret} >= {"otp-redis"}
    # ... each refused one is Stalled, naming the field, with none of its children applied.
    for name, (_, reason, field) in channels.items():
        if reason is None:
            continue
        channel = wait_condition(k8s_api, namespace, name, "Stalled", "True", timeout=60)
        ready = condition(channel, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason) and field in ready["message"], ready
        assert channel["status"]["observedGeneration"] == channel["metadata"]["generation"]
        relay = names.relay_name(name)
        assert _find(apps.read_namespaced_deployment, relay, namespace) is None, f"{name}: relay deployed"
        assert _find(networking.read_namespaced_network_policy, relay, namespace) is None
        assert _find(core.read_namespaced_secret, names.signing_key_secret_name(name), namespace) is None


def _find(read, name: str, namespace: str):
    try:
        return read(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


@pytest.mark.parametrize(("args", "complaint"), [
    (["--cluster-cidr", "10.0.0.1/8"], "is not a network such as 10.0.0.0/8"),  # a host with a prefix: a typo
    (["--cluster-cidr", "0.0.0.0/0"], "would exclude every address"),
    (["--cluster-cidr", "redis.cache.svc"], "is not a network"),
    (["--dns-pod-label", "kube-dns"], "must be key=value"),
    (["--dns-port", "0"], "--dns-port must be a port"),
    (["--dns-namespace", ""], "--dns-namespace must name"),
    (["--relay-https-egress", "anywhere"], "invalid choice"),
])
def test_bad_egress_settings_stop_the_operator_naming_the_flag(args, complaint, capsys) -> None:
    from otp_operator.cli import main

    with pytest.raises(SystemExit):
        main(["run", *args])
    assert complaint in capsys.readouterr().err
