"""Delivery receipts end to end on the real control plane: the operator creates the channel's
receipt token, the relay started from the Deployment asks 8x8 for receipts on the channel's
public URL, the 8x8 emulator posts them there, and a token rotation keeps the previous one."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from otp_operator import names

from tests.support.channels import create_channel, patch_channel, wait_condition, wait_for

pytestmark = pytest.mark.cluster


def _tokens(api: client.ApiClient, namespace: str) -> list[str]:
    secret = client.CoreV1Api(api).read_namespaced_secret(names.receipt_token_secret_name("prod"), namespace)
    return base64.b64decode(secret.data[names.RECEIPT_TOKEN_SECRET_KEY]).decode().split()


def test_receipts_reach_the_relay_through_the_channel_url_and_survive_a_rotation(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator, relay_from_deployment) -> None:
    operator = run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    [token] = _tokens(k8s_api, namespace)

    relay = relay_from_deployment(namespace, "prod-relay", ch.public_url).relay
    sms_emulator.clear()
    sms_emulator.set_outcome("+6591234567", "delivered", after_ms=300)
    result = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 246810", code="246810")
    assert result.outcome == "success", result
    [message] = [m for m in sms_emulator.messages() if m.subaccount == ch.subaccount]
    assert message.dlr_callback_url == f"{ch.public_url}/v1/receipts/{token}"
    wait_for(lambda: [a["result"] for a in sms_emulator.receipts()["attempts"]] == [200], timeout=30,
             what="8x8's receipt accepted by the relay")
    summary = relay.get("/v1/delivery-summary").json()
    assert (summary["sent"], summary["delivered"], summary["ratio"]) == (1, 1, 1.0)

    patch_channel(k8s_api, namespace, "prod", {"metadata": {"annotations": {
        names.ANNOTATION_ROTATE_RECEIPT_TOKEN: "first"}}})
    previous, current = wait_for(lambda: _tokens(k8s_api, namespace) if len(_tokens(k8s_api, namespace)) == 2
                                 else None, timeout=60, what="a second receipt token")
    kept = previous == token and current != token
    assert kept, "the previous token must stay valid (first line), the new one last"
    # the relay follows the Secret: new sends name the new token, the old one still works
    wait_for(lambda: relay.client.post(f"{ch.public_url}/v1/receipts/{current}", json={}).status_code == 400,
             timeout=30, what="the relay accepting the new token")
    assert relay.client.post(f"{ch.public_url}/v1/receipts/{previous}", json={}).status_code == 400
    assert relay.client.post(f"{ch.public_url}/v1/receipts/{token}x", json={}).status_code == 404
    result = ch.tenant.fire_phone_message(recipient="+6591234567", text="Your code is 135790", code="135790")
    assert result.outcome == "success", result
    latest = sms_emulator.messages()[-1]
    same = latest.dlr_callback_url == f"{ch.public_url}/v1/receipts/{current}"
    stable = _tokens(k8s_api, namespace) == [previous, current]
    assert same and stable, "rotated once, and only once"
    operator.assert_no_secrets_logged([*ch.secret_values, previous, current])
