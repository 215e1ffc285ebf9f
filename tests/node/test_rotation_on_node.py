"""Signing keys on real pods: the kubelet's own Secret refresh (about a minute, not the stand-in's
0.3 s) and a rotation under continuous traffic through the sandbox ingress to the relay pods."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from kubernetes import client

from otp_operator import names
from otp_sandbox.ingress import ServiceIngress, trust_sandbox_ca
from tests.fixtures.cluster import temporary_namespace
from tests.fixtures.relay import otp_body
from tests.operator.support import create_channel, get_channel, patch_channel, wait_condition, wait_for
from tests.relay.conftest import fresh_number

from .support import real_node_pod_template

pytestmark = [pytest.mark.cluster, pytest.mark.container]


def test_a_secret_update_reaches_a_running_relay_pod(k8s_api, relay_pod, sms_emulator) -> None:
    """Measures the node's Secret refresh delay as a user sees it: until the running relay accepts
    a signing key that was only written to its Secret."""
    sms_emulator.add_subaccount("refresh_otp", "refresh-api-key")
    with temporary_namespace(k8s_api) as namespace:
        relay = relay_pod(namespace, {"SUBACCOUNT": "refresh_otp", "SMS_BASE_URL": sms_emulator.base_url,
                                      "PER_RECIPIENT": "100/1m"}, "refresh-api-key", ("first-key",), name="refresh")
        assert relay.post(otp_body(fresh_number()), "second-key").status_code == 401
        secret = client.V1Secret(data={names.SIGNING_KEY_SECRET_KEY: base64.b64encode(b"first-key\nsecond-key\n").decode()})
        client.CoreV1Api(k8s_api).patch_namespaced_secret(names.signing_key_secret_name("refresh"), namespace, secret)
        written = time.monotonic()
        wait_for(lambda: relay.post(otp_body(fresh_number()), "second-key").status_code == 202, timeout=240,
                 interval=1.0, what="the relay pod to accept the key added to its Secret")
        delay = time.monotonic() - written
        print(f"\nSecret refresh delay on the real node (write -> relay accepts the new key): {delay:.0f}s")
        assert relay.post(otp_body(fresh_number()), "first-key").status_code == 202
        relay.stop()


def test_signing_key_rotation_under_traffic_on_real_pods_loses_no_otp(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, sandbox_ca, ssl_cert_file) -> None:
    operator = run_operator()
    ch = setup_channel(namespace)
    manifest = ch.manifest(sms_emulator.base_url)
    manifest["spec"]["relay"]["podTemplate"] = real_node_pod_template()
    create_channel(k8s_api, manifest)
    apps = client.AppsV1Api(k8s_api)
    wait_for(lambda: apps.list_namespaced_deployment(namespace).items, timeout=60, what="the relay Deployment")
    trust_sandbox_ca(k8s_api, namespace, names.relay_name("prod"), names.RELAY_CONTAINER, ssl_cert_file)
    wait_condition(k8s_api, namespace, "prod", timeout=300)
    core = client.CoreV1Api(k8s_api)

    def keys() -> list[str]:
        secret = core.read_namespaced_secret(names.signing_key_secret_name("prod"), namespace)
        return [k for k in base64.b64decode(secret.data["keys"]).decode().splitlines() if k]

    (old_key,) = keys()
    outcomes: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        number = 0
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            number += 1
            result = ch.tenant.fire_phone_message(recipient=f"+6591{number:06d}", text=f"code {number}", code=None)
            outcomes.append(result.outcome if result.outcome == "success" else f"{result.outcome}: {result.reason}")

    public_port = int(ch.public_url.split(":")[2].split("/")[0])
    with ServiceIngress(k8s_api, namespace, names.relay_name("prod"), public_port, sandbox_ca.issue("ingress")):
        wait_for(lambda: ch.tenant.fire_phone_message(recipient="+6598000000", text="warm", code=None).outcome
                 == "success", timeout=60, interval=1.0, what="the relay pods answering through the ingress")
        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            wait_for(lambda: len(outcomes) >= 3, timeout=60, what="traffic before the rotation")
            patch_channel(k8s_api, namespace, "prod",
                          {"metadata": {"annotations": {names.ANNOTATION_ROTATE_SIGNING_KEY: "2026-12-01T00:00:00Z"}}})

            def finished() -> bool:
                signing = ((get_channel(k8s_api, namespace, "prod") or {}).get("status") or {}).get("signingKey") or {}
                return signing.get("phase") == "Stable" and signing.get("rotationRequest") == "2026-12-01T00:00:00Z" \
                    and len(keys()) == 1 and keys() != [old_key]

            wait_for(finished, timeout=420, interval=1.0, what="the rotation to finish")
            # Traffic after the old key is gone, until the last rollout has settled.
            wait_condition(k8s_api, namespace, "prod", timeout=300)
            after = len(outcomes)
            wait_for(lambda: len(outcomes) >= after + 5, timeout=60, what="traffic after the rotation")
        finally:
            stop.set()
            thread.join(timeout=60)
    assert [o for o in outcomes if o != "success"] == []
    assert len(outcomes) >= 10
    operator.assert_no_secrets_logged([old_key, *keys(), *ch.secret_values])
