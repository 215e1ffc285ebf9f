"""The CRD fields of the relay's shared state and global limit, against the real API server."""

from __future__ import annotations

import pytest
from kubernetes.client.rest import ApiException
from otp_relay import config

from tests.support.builders import minimal_channel
from tests.support.channels import create_channel

pytestmark = pytest.mark.cluster


def test_state_store_and_global_limit_are_accepted(k8s_api, otpchannel_crd, namespace: str) -> None:
    body = minimal_channel(namespace, name="shared")
    body["spec"]["policy"] = {"perRecipient": {"window": "1h30m"}, "globalLimit": {"limit": 20, "window": "1m"}}
    body["spec"]["relay"]["stateStore"] = {"url": "redis://redis.cache.svc:6379/1",
                                           "passwordSecretRef": {"name": "otp-redis"}}
    body["spec"]["relay"]["stateStore"]["caConfigMapRef"] = {"name": "redis-ca"}
    spec = create_channel(k8s_api, body)["spec"]
    assert spec["relay"]["stateStore"] == {"url": "redis://redis.cache.svc:6379/1", "tls": False,
                                           "passwordSecretRef": {"name": "otp-redis", "key": "password"},
                                           "caConfigMapRef": {"name": "redis-ca", "key": "ca.crt"}}
    # the window the API server took is one the relay runs with (it crash-looped on 1h30m)
    assert config.Rate.parse(f"5/{spec['policy']['perRecipient']['window']}").window == 5400


@pytest.mark.parametrize(("store", "field"), [
    ({"url": "redis://user:secret@redis:6379"}, "spec.relay.stateStore.url"),
    ({"url": "http://redis:6379"}, "spec.relay.stateStore.url"),
    ({"tls": True}, "spec.relay.stateStore.url: Required value"),
    # redis-py reads TLS options from the query: this one would turn certificate checks off
    ({"url": "rediss://redis:6380?ssl_cert_reqs=none"}, "ssl_cert_reqs=none would turn TLS verification off"),
    ({"url": "rediss://redis:6380/0?ssl_cert_reqs=none"}, "ssl_cert_reqs=none would turn TLS verification off"),
])
def test_bad_state_store_is_rejected(k8s_api, otpchannel_crd, namespace: str, store, field) -> None:
    body = minimal_channel(namespace, name="bad-store")
    body["spec"]["relay"]["stateStore"] = store
    with pytest.raises(ApiException) as error:
        create_channel(k8s_api, body)
    assert error.value.status == 422 and field in error.value.body


def test_global_limit_window_uses_the_duration_grammar(k8s_api, otpchannel_crd, namespace: str) -> None:
    body = minimal_channel(namespace, name="bad-window")
    body["spec"]["policy"] = {"globalLimit": {"window": "1d"}}
    with pytest.raises(ApiException) as error:
        create_channel(k8s_api, body)
    assert error.value.status == 422 and "spec.policy.globalLimit.window" in error.value.body
