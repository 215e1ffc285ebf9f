"""No exfiltration by spec: secrets go only to Auth0 tenants and 8x8, or where the administrator allows."""

from __future__ import annotations

import pytest
from kubernetes import client
from otp_operator import names
from otp_operator.cli import build_parser
from otp_operator.endpoints import (
    ALLOW_AUTH0_DOMAIN_ENV,
    ALLOW_SMS_BASE_URL_ENV,
    DisallowedEndpoint,
    EndpointPolicy,
    check_auth0_domain,
    check_sms_base_url,
)
from otp_sandbox.processes import SANDBOX_ENDPOINT_ARGS, OperatorProcess

from tests.fixtures.operator import TEST_OPERATOR_ARGS
from tests.support.channels import condition, create_channel, get_channel, wait_condition

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
