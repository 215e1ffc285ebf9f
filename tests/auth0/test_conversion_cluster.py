"""spec.conversion on the real control plane: the operator creates the channel's Auth0 log stream
(sending to the relay's /v1/auth0-logs with the token of its Secret) and deleting the channel
deletes it. Run by the integrator (cluster)."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client

from otp_operator import names
from tests.support.channels import create_channel, delete_channel, get_channel, wait_condition, wait_for, wait_for_event

pytestmark = pytest.mark.cluster

STREAM = "otp-relay-{namespace}-prod"


def _tokens(api: client.ApiClient, namespace: str) -> list[str]:
    secret = client.CoreV1Api(api).read_namespaced_secret(names.log_stream_token_secret_name("prod"), namespace)
    return base64.b64decode(secret.data[names.LOG_TOKEN_SECRET_KEY]).decode().split()


def test_conversion_creates_the_log_stream_and_deleting_the_channel_deletes_it(
        k8s_api, namespace, run_operator, setup_channel, sms_emulator) -> None:
    operator = run_operator()
    ch = setup_channel(namespace)
    create_channel(k8s_api, ch.manifest(sms_emulator.base_url, replicas=1, conversion={}))
    wait_condition(k8s_api, namespace, "prod", timeout=90)
    wait_condition(k8s_api, namespace, "prod", "ConversionTracking", "True", reason="LogStreamActive", timeout=90)
    [token] = _tokens(k8s_api, namespace)
    [stream] = ch.tenant.state()["log_streams"]
    assert stream["name"] == STREAM.format(namespace=namespace) and stream["status"] == "active"
    assert stream["sink"]["httpEndpoint"] == f"{ch.public_url}/v1/auth0-logs"
    assert stream["sink"]["httpAuthorization"] == f"Bearer {token}"
    wait_for_event(k8s_api, namespace, "prod", "LogStreamCreated")

    delete_channel(k8s_api, namespace, "prod")
    wait_for(lambda: get_channel(k8s_api, namespace, "prod") is None, timeout=60, what="the channel to go")
    assert ch.tenant.state()["log_streams"] == []
    operator.assert_no_secrets_logged([*ch.secret_values, token])
