"""The OtpChannel CRD against the real API server: admission, defaults, printer columns."""

from __future__ import annotations

import copy
import json

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.crd import GROUP, PLURAL, VERSION
from tests.support.builders import example_channel, minimal_channel
from tests.support.channels import create_channel
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster



def get_json(api: client.ApiClient, path: str, accept: str = "application/json") -> dict:
    response = api.call_api("GET", api.configuration.host + path, header_params={"Accept": accept})
    response.read()
    assert response.status == 200, response.data
    return json.loads(response.data)


def _openapi(api: client.ApiClient) -> dict | None:
    response = api.call_api("GET", f"{api.configuration.host}/openapi/v3/apis/{GROUP}/{VERSION}",
                            header_params={"Accept": "application/json"})
    response.read()
    return json.loads(response.data) if response.status == 200 else None


def test_crd_is_established_with_short_name_and_status(otpchannel_crd: dict) -> None:
    conditions = {c["type"]: c["status"] for c in otpchannel_crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert otpchannel_crd["status"]["acceptedNames"]["shortNames"] == ["otpch"]
    assert otpchannel_crd["status"]["acceptedNames"]["categories"] == ["otprelay"]
    (version,) = otpchannel_crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


def test_example_is_accepted(k8s_api, otpchannel_crd, namespace: str) -> None:
    created = create_channel(k8s_api, example_channel(namespace))
    assert created["spec"]["auth0"]["domain"] == "shop.eu.auth0.com"
    assert created["spec"]["policy"]["allowedCountries"] == ["SG", "MY"]


def test_defaults_are_filled_in(k8s_api, otpchannel_crd, namespace: str) -> None:
    spec = create_channel(k8s_api, minimal_channel(namespace))["spec"]
    assert spec["auth0"]["integration"] == "phone-provider"
    assert spec["auth0"]["name"] == ""
    assert spec["auth0"]["replaceForeignProvider"] is False
    assert spec["auth0"]["credentialsSecretRef"] == {
        "name": "auth0", "clientIdKey": "client_id", "clientSecretKey": "client_secret",
    }
    assert spec["sms"]["apiKeySecretRef"] == {"name": "eightbyeight", "key": "apikey"}
    assert spec["sms"]["region"] == "ap"
    assert spec["sms"]["encoding"] == "AUTO"
    assert spec["policy"] == {"perRecipient": {"limit": 5, "window": "10m"},
                              "globalLimit": {"limit": 100, "window": "1s"}}
    assert spec["relay"]["replicas"] == 2
    assert spec["suspend"] is False


def test_a_canary_gets_the_default_period(k8s_api, otpchannel_crd, namespace: str) -> None:
    body = minimal_channel(namespace, name="canary")
    body["spec"]["canary"] = {"to": "+6591234567"}
    assert create_channel(k8s_api, body)["spec"]["canary"] == {"to": "+6591234567", "every": "6h"}


def test_voice_gets_its_defaults(k8s_api, otpchannel_crd, namespace: str) -> None:
    body = minimal_channel(namespace, name="voice")
    body["spec"]["voice"] = {"callerId": "+6531234567"}
    from otp_relay import config as relay_config  # noqa: PLC0415  the relay's defaults are the CRD's

    limit, window = relay_config.DEFAULT_VOICE_PER_RECIPIENT.split("/")
    assert create_channel(k8s_api, body)["spec"]["voice"] == {
        "callerId": "+6531234567", "enabled": True, "profile": relay_config.DEFAULT_VOICE_PROFILE,
        "repetition": relay_config.DEFAULT_VOICE_REPETITION, "perRecipient": {"limit": int(limit), "window": window},
        "offer": False}


def test_conversion_gets_the_defaults_spec_py_has(k8s_api, otpchannel_crd, namespace: str) -> None:
    from otp_operator import spec as channel_spec  # noqa: PLC0415

    body = minimal_channel(namespace, name="conversion")
    body["spec"]["conversion"] = {}
    assert create_channel(k8s_api, body)["spec"]["conversion"] == {
        "enabled": True, "failureAfter": channel_spec.CONVERSION_DEFAULT_FAILURE_AFTER,
        "blocking": {"mode": channel_spec.CONVERSION_DEFAULT_MODE}}


def _set(body: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = body["spec"]
    for part in parents:
        node = node.setdefault(part, {})
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value


_DELETE = object()

# (change to the minimal valid spec, text the API server's message must contain)
INVALID_SPECS = {
    "domain missing": ("auth0.domain", _DELETE, "spec.auth0.domain: Required value"),
    "domain with scheme": ("auth0.domain", "https://tenant.auth0.com", "spec.auth0.domain"),
    "domain with path": ("auth0.domain", "tenant.auth0.com/api", "spec.auth0.domain"),
    "unknown integration": ("auth0.integration", "sms-hook", "spec.auth0.integration"),
    "credentials ref missing": ("auth0.credentialsSecretRef", _DELETE,
                                "spec.auth0.credentialsSecretRef: Required value"),
    "credentials secret name invalid": ("auth0.credentialsSecretRef",
                                        {"name": "Auth0_Creds"}, "spec.auth0.credentialsSecretRef.name"),
    "auth0 name invalid": ("auth0.name", "-otp relay", "spec.auth0.name"),
    "subaccount too short": ("sms.subaccountId", "ab", "spec.sms.subaccountId"),
    "api key ref missing": ("sms.apiKeySecretRef", _DELETE, "spec.sms.apiKeySecretRef: Required value"),
    "unknown region": ("sms.region", "asia", "spec.sms.region"),
    "unknown encoding": ("sms.encoding", "ASCII", "spec.sms.encoding"),
    "sender too long": ("sms.sender", "S" * 17, "spec.sms.sender"),
    "base url not http": ("sms.baseUrl", "ftp://sms.example", "spec.sms.baseUrl"),
    "country lower case": ("policy.allowedCountries", ["sg"], "spec.policy.allowedCountries[0]"),
    "country duplicated": ("policy.allowedCountries", ["SG", "SG"], "spec.policy.allowedCountries[1]"),
    "limit zero": ("policy.perRecipient", {"limit": 0}, "spec.policy.perRecipient.limit"),
    "window not a duration": ("policy.perRecipient", {"window": "10 minutes"},
                              "spec.policy.perRecipient.window"),
    "window too long": ("policy.perRecipient", {"window": "48h"},
                        "window must be a duration between 1s and 24h"),
    "replicas over 10": ("relay.replicas", 11, "spec.relay.replicas"),
    "public url not https": ("relay.publicUrl", "http://otp.example.com", "spec.relay.publicUrl"),
    "no way to reach the relay": ("relay.publicUrl", _DELETE,
                                  "relay.publicUrl or relay.ingress.host is required"),
    "public url off the ingress host": (
        "relay.ingress", {"host": "otp.other.example"},
        "relay.publicUrl must be on relay.ingress.host"),
    "resource quantity invalid": ("relay.resources", {"limits": {"cpu": "lots"}},
                                  "spec.relay.resources.limits.cpu"),
    "suspend not boolean": ("suspend", "yes", "spec.suspend"),
    "canary number not E.164": ("canary", {"to": "6591234567"}, "canary.to must be a phone number in E.164"),
    "canary without a number": ("canary", {"every": "6h"}, "spec.canary.to: Required value"),
    "canary too often": ("canary", {"to": "+6591234567", "every": "5m"},
                         "canary.every must be a duration between 30m and 168h"),
    "voice caller id not E.164": ("voice", {"callerId": "6531234567"},
                                  "voice.callerId must be a phone number in E.164"),
    "voice without a caller id": ("voice", {"repetition": 2}, "spec.voice.callerId: Required value"),
    "voice profile not a speech profile": ("voice", {"callerId": "+6531234567", "profile": "Emma"},
                                           "spec.voice.profile"),
    "voice profiles keyed by a non-locale": ("voice", {"callerId": "+6531234567", "profiles": {"English!": "en-GB-Emma"}},
                                             "voice.profiles keys must be locales"),
    "voice read too often": ("voice", {"callerId": "+6531234567", "repetition": 9}, "spec.voice.repetition"),
    "conversion failure reported too late": ("conversion", {"failureAfter": "15m"},
                                             "conversion.failureAfter must be a duration of at least 1s and less than 15m"),
    "conversion mode unknown": ("conversion", {"blocking": {"mode": "block"}}, "spec.conversion.blocking.mode"),
    "conversion allow entry not a country or prefix": (
        "conversion", {"blocking": {"allow": ["gb"]}}, "conversion.blocking.allow entries must be"),
    "conversion sample too small": ("conversion", {"blocking": {"minSample": 4}},
                                    "spec.conversion.blocking.minSample"),
    "conversion block too short": ("conversion", {"blocking": {"blockFor": "1m"}},
                                   "conversion.blocking.blockFor must be a duration of at least 5m"),
    "conversion blocked share over 100": ("conversion", {"blocking": {"maxBlockedSharePercent": 101}},
                                          "spec.conversion.blocking.maxBlockedSharePercent"),
}


@pytest.mark.parametrize("case", sorted(INVALID_SPECS))
def test_invalid_spec_is_rejected_naming_the_field(k8s_api, otpchannel_crd, namespace, case) -> None:
    path, value, expected = INVALID_SPECS[case]
    body = copy.deepcopy(minimal_channel(namespace, name="bad"))
    _set(body, path, value)
    with pytest.raises(ApiException) as raised:
        create_channel(k8s_api, body)
    assert raised.value.status == 422, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert expected in message, message


def test_channel_name_must_fit_child_names(k8s_api, otpchannel_crd, namespace) -> None:
    with pytest.raises(ApiException) as raised:
        create_channel(k8s_api, minimal_channel(namespace, name="prod.v2"))
    assert raised.value.status == 422
    assert "metadata.name must be a DNS label" in json.loads(raised.value.body)["message"]


def test_printer_columns_in_table_view(k8s_api, otpchannel_crd, namespace) -> None:
    objects = client.CustomObjectsApi(k8s_api)
    create_channel(k8s_api, minimal_channel(namespace))
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "minimal",
        {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                            "message": "relay available, Auth0 in sync",
                            "lastTransitionTime": "2026-11-25T00:00:00Z"}],
            "relay": {"url": "https://otp.example.com/prod"},
            "auth0": {"id": "7d2f6a3e-action"},
        }},
    )
    table = get_json(k8s_api, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
                     "?includeObject=None", accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [
        ("Name", 0), ("Ready", 0), ("Integration", 0), ("Relay-URL", 0), ("Age", 0),
        ("Auth0-ID", 1), ("Message", 1),
    ]
    (row,) = table["rows"]
    name, ready, integration, url, _age, auth0_id, message = row["cells"]
    assert (name, ready, integration, url, auth0_id, message) == (
        "minimal", "True", "phone-provider", "https://otp.example.com/prod",
        "7d2f6a3e-action", "relay available, Auth0 in sync",
    )


def test_explain_has_descriptions(k8s_api, otpchannel_crd) -> None:
    """`kubectl explain otpchannel.spec.sms` reads these descriptions from OpenAPI v3 (which the
    API server publishes a moment after the CRD is Established)."""
    doc = wait_for(lambda: _openapi(k8s_api), timeout=30, what="the CRD's OpenAPI v3 document")
    schema = doc["components"]["schemas"]["io.otprelay.v1alpha1.OtpChannel"]

    def walk(node: dict, path: str):
        if path.startswith("metadata") or path in ("apiVersion", "kind", "metadata"):
            return
        yield path, node
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{key}" if path else key)
        if "items" in node:
            yield from walk(node["items"], f"{path}[]")

    fields = [(path, node) for path, node in walk(schema["properties"]["spec"], "spec")]
    assert len(fields) > 30
    undocumented = [path for path, node in fields if not path.endswith("[]") and not node.get("description")]
    assert undocumented == []
    sms = schema["properties"]["spec"]["properties"]["sms"]
    assert "8x8" in sms["description"]
