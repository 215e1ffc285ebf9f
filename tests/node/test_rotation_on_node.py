"""Signing keys on real pods: the kubelet's own Secret refresh (about a minute, not the stand-in's
0.3 s) and a rotation under continuous traffic through the sandbox ingress to the relay pods."""

from __future__ import annotations

import base64
import time

import pytest
from kubernetes import client
from otp_operator import names
from otp_sandbox.ingress import ServiceIngress, trust_sandbox_ca

from tests.fixtures.cluster import temporary_namespace
from tests.fixtures.relay import fresh_number, otp_body
from tests.support.channels import (
    OtpTraffic,
    create_channel,
    patch_channel,
    rotation_finished,
    signing_keys,
    wait_condition,
    wait_for,
)
from tests.support.node import real_node_pod_template

pytestmark = [pytest.mark.cluster, pytest.mark.container]


def test_a_secret_update_reaches_a_running_relay_pod_within_the_key_propagation(k8s_api, relay_pod,
                                                                              sms_emulator) -> None:
    """The node's Secret refresh delay as a user sees it (until the running relay accepts a signing
    key that was only written to its Secret) is covered by the operator's default
    ``--key-propagation``: otherwise a rotation would hand Auth0 a key some pods do not know."""
    sms_emulator.add_subaccount("refresh_otp", "refresh-api-key")
    with temporary_namespace(k8s_api) as namespace:
        relay = relay_pod(namespace, {"SUBACCOUNT": "refresh_otp", "SMS_BASE_URL": sms_emulator.base_url,
                                      "PER_RECIPIENT": "100/1m"}, "refresh-api-key", ("first-key",), name="refresh")
        assert relay.post(otp_body(fresh_number()), "second-key").status_code == 401
        secret = client.V1Secret(data={names.SIGNING_KEY_SECRET_KEY: base64.b64encode(b"first-key\nsecond-key\n").decode()})
        client.CoreV1Api(k8s_api).patch_namespaced_secret(names.signing_key_secret_name("refresh"), namespace, secret)
        written = time.monotonic()
        wait_for(lambda: relay.post(otp_body(fresh_number()), "second-key").status_code == 202,
                 timeout=2 * names.DEFAULT_KEY_PROPAGATION_SECONDS, interval=1.0,
                 what="the relay pod to accept the key added to its Secret")
        delay = time.monotonic() - written
        print(f"\nSecret refresh delay on the real node (write -> relay accepts the new key): {delay:.0f}s")
        assert delay <= names.DEFAULT_KEY_PROPAGATION_SECONDS, (
            f"the kubelet took {delay:.0f} s, longer than --key-propagation's default")
        assert relay.post(otp_body(fresh_number()), "first-key").status_code == 202
        relay.stop()


@pytest.mark.timeout(900)  # its waits add up to 840 s: real pods, 90 s key propagation, 30 s grace, two rollouts
def test_signing_key_rotation_under_traffic_on_real_pods_loses_no_otp(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, sandbox_ca, ssl_cert_file) -> None:
    # The production timings this test exists to prove, not the quick ones of the other tests.
    operator = run_operator("--key-propagation", str(names.DEFAULT_KEY_PROPAGATION_SECONDS),
                            "--rotation-grace", str(names.DEFAULT_ROTATION_GRACE_SECONDS))
    ch = setup_channel(namespace)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["relay"]["podTemplate"] = real_node_pod_template()
    create_channel(k8s_api, manifest)
    apps = client.AppsV1Api(k8s_api)
    wait_for(lambda: apps.list_namespaced_deployment(namespace).items, timeout=60, what="the relay Deployment")
    trust_sandbox_ca(k8s_api, namespace, names.relay_name("prod"), names.RELAY_CONTAINER, ssl_cert_file)
    wait_condition(k8s_api, namespace, "prod", timeout=300)
    (old_key,) = signing_keys(k8s_api, namespace, "prod")
    request = "2026-12-01T00:00:00Z"
    public_port = int(ch.public_url.split(":")[2].split("/")[0])
    with ServiceIngress(k8s_api, namespace, names.relay_name("prod"), public_port, sandbox_ca.issue("ingress")):
        wait_for(lambda: ch.tenant.fire_phone_message(recipient="+6598000000", text="warm", code=None).outcome
                 == "success", timeout=60, interval=1.0, what="the relay pods answering through the ingress")
        with OtpTraffic(ch.tenant) as traffic:
            traffic.wait_for_more(3, "traffic before the rotation")
            patch_channel(k8s_api, namespace, "prod",
                          {"metadata": {"annotations": {names.ANNOTATION_ROTATE_SIGNING_KEY: request}}})
            wait_for(lambda: rotation_finished(k8s_api, namespace, "prod", request, old_key), timeout=420,
                     interval=1.0, what="the rotation to finish")
            # Traffic after the old key is gone, until the last rollout has settled.
            wait_condition(k8s_api, namespace, "prod", timeout=300)
            traffic.wait_for_more(5, "traffic after the rotation")
    assert traffic.failures() == []
    assert len(traffic.outcomes) >= 10
    operator.assert_no_secrets_logged([old_key, *signing_keys(k8s_api, namespace, "prod"), *ch.secret_values])
