"""Phone providers: one per tenant, ``custom`` only with a deployed custom-phone-provider action."""

from __future__ import annotations

import httpx
import pytest
from auth0.management.errors import BadRequestError

from .conftest import NO_RETRY, deployed_action

CUSTOM = {"name": "custom", "disabled": False,
          "configuration": {"delivery_methods": ["text"]}, "credentials": {}}
CPP_CODE = "exports.onExecuteCustomPhoneProvider = async (event, api) => {};"


async def test_custom_provider_needs_a_deployed_action(api, tenant):
    refused = await api.post("/branding/phone/providers", json=CUSTOM)
    assert refused.status_code == 400
    assert "custom-phone-provider" in refused.json()["message"]
    draft = (await api.post("/actions/actions", json={
        "name": "cpp", "supported_triggers": [{"id": "custom-phone-provider",
                                               "version": "v1"}], "code": CPP_CODE})).json()
    assert (await api.post("/branding/phone/providers", json=CUSTOM)).status_code == 400
    await api.delete(f"/actions/actions/{draft['id']}")
    await deployed_action(api, "cpp", "custom-phone-provider", CPP_CODE)
    created = await api.post("/branding/phone/providers", json=CUSTOM)
    assert created.status_code == 201
    provider = created.json()
    assert provider["id"].startswith("pro_")
    assert {k: provider[k] for k in ("name", "channel", "disabled", "tenant")} == {
        "name": "custom", "channel": "phone", "disabled": False, "tenant": tenant.name}
    assert "credentials" not in provider
    second = await api.post("/branding/phone/providers", json=CUSTOM)
    assert second.status_code == 409


async def test_update_switch_disable_and_delete(api):
    twilio = {"name": "twilio", "configuration": {"sid": "AC1", "delivery_methods": ["text"],
                                                  "default_from": "+15550001"},
              "credentials": {"auth_token": "twilio-token"}}
    created = await api.post("/branding/phone/providers", json=twilio)
    assert created.status_code == 201
    assert "twilio-token" not in created.text
    provider_id = created.json()["id"]
    switch = await api.patch(f"/branding/phone/providers/{provider_id}",
                             json={"name": "custom", "configuration": {
                                 "delivery_methods": ["text"]}})
    assert switch.status_code == 400  # no deployed custom-phone-provider action yet
    await deployed_action(api, "cpp", "custom-phone-provider", CPP_CODE)
    switched = await api.patch(f"/branding/phone/providers/{provider_id}", json={
        "name": "custom", "configuration": {"delivery_methods": ["text"]}})
    assert switched.status_code == 200 and switched.json()["name"] == "custom"
    disabled = await api.patch(f"/branding/phone/providers/{provider_id}",
                               json={"disabled": True})
    assert disabled.json()["disabled"] is True
    listed = (await api.get("/branding/phone/providers", params={"disabled": "true"})).json()
    assert [p["id"] for p in listed["providers"]] == [provider_id]
    assert (await api.delete(f"/branding/phone/providers/{provider_id}")).status_code == 204
    assert (await api.get(f"/branding/phone/providers/{provider_id}")).status_code == 404


@pytest.mark.parametrize("body", [
    {"name": "vonage", "configuration": {"delivery_methods": ["text"]}},
    {"name": "custom", "configuration": {"delivery_methods": ["fax"]}},
    {"name": "twilio", "configuration": {"delivery_methods": ["text"]}},
])
async def test_invalid_providers_are_refused(api, body):
    response = await api.post("/branding/phone/providers", json=body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_body"


async def test_sdk_provider_round_trip(sdk, api):
    with pytest.raises(BadRequestError):
        await sdk.branding.phone.providers.create(
            name="custom", configuration={"delivery_methods": ["text"]}, credentials={},
            request_options=NO_RETRY)
    await deployed_action(api, "cpp", "custom-phone-provider", CPP_CODE)
    created = await sdk.branding.phone.providers.create(
        name="custom", disabled=False, configuration={"delivery_methods": ["text"]},
        credentials={})
    listed = await sdk.branding.phone.providers.list()
    assert [p.id for p in listed.providers] == [created.id]
    updated = await sdk.branding.phone.providers.update(created.id, disabled=True)
    assert updated.disabled is True
    await sdk.branding.phone.providers.delete(created.id)
    assert (await sdk.branding.phone.providers.list()).providers == []


async def test_the_legacy_phone_provider_is_gated_by_the_legacy_flag_not_by_the_experience(
        api, tenant):
    settings = (await api.get("/tenants/settings")).json()
    assert settings["phone_consolidated_experience"] is True  # a new tenant

    async def refused() -> None:
        for answer in (await api.get("/guardian/factors/phone/selected-provider"),
                       await api.put("/guardian/factors/phone/selected-provider",
                                     json={"provider": "phone-message-hook"})):
            assert answer.status_code == 403
            assert answer.json()["message"].startswith(
                "Insufficient privileges to use this deprecated feature")
            assert answer.json()["errorCode"] == "legacy_mfa_phone_provider_not_allowed"

    await refused()
    # Turning the experience off succeeds and unlocks nothing: the flag gates the endpoints.
    patched = await api.patch("/tenants/settings", json={"phone_consolidated_experience": False})
    assert patched.json()["phone_consolidated_experience"] is False
    await refused()
    # And no Management API token can set the flag.
    flag = await api.patch("/tenants/settings", json={"flags": {"legacy_mfa_phone_provider": True}})
    assert flag.status_code == 400
    migrations = await api.patch("/migrations", json={"flags": {"legacy_mfa_phone_provider": True}})
    assert migrations.status_code == 403
    await refused()
    tenant.set_phone(legacy_mfa_phone_provider=True)  # what Auth0 Support does
    assert (await api.get("/guardian/factors/phone/selected-provider")).json() == {
        "provider": "auth0"}
    chosen = await api.put("/guardian/factors/phone/selected-provider",
                           json={"provider": "phone-message-hook"})
    assert chosen.json() == {"provider": "phone-message-hook"}
    assert tenant.state()["phone"]["selected_provider"] == "phone-message-hook"
    bad = await api.put("/guardian/factors/phone/selected-provider", json={"provider": "x"})
    assert bad.status_code == 400


@pytest.mark.parametrize(("legacy_flag", "upe", "selected"), [(True, False, 200), (False, True, 403)])
async def test_a_tenant_may_leave_the_experience_setting_out(
        auth0_tenant, legacy_flag, upe, selected):
    from .conftest import token_for  # noqa: PLC0415

    tenant = auth0_tenant(phone_consolidated_experience=None, legacy_mfa_phone_provider=legacy_flag)
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    async with httpx.AsyncClient(base_url=f"{tenant.base_url}/api/v2", headers=headers,
                                 verify=tenant.ssl_context) as http:
        settings = (await http.get("/tenants/settings")).json()
        legacy = await http.get("/guardian/factors/phone/selected-provider")
    assert "phone_consolidated_experience" not in settings
    assert legacy.status_code == selected
    assert tenant.state()["phone"]["phone_consolidated_experience"] is upe  # what it runs


async def test_mfa_sms_factor_and_message_types(api):
    factors = (await api.get("/guardian/factors")).json()
    assert {"name": "sms", "enabled": False, "trial_expired": False} in factors
    assert (await api.put("/guardian/factors/sms", json={"enabled": True})).json() == {
        "enabled": True}
    assert (await api.get("/guardian/factors/phone/message-types")).json() == {
        "message_types": []}
    # Under the Unified Phone Experience the types must be among the provider's methods.
    refused = await api.put("/guardian/factors/phone/message-types",
                            json={"message_types": ["sms"]})
    assert refused.status_code == 409
    assert refused.json()["message"] == (
        "Message Type is not supported by the configured phone provider")
    await api.post("/branding/phone/providers", json={
        "name": "twilio", "configuration": {"delivery_methods": ["text"], "sid": "ACx"},
        "credentials": {"auth_token": "t"}})
    assert (await api.put("/guardian/factors/phone/message-types",
                          json={"message_types": ["sms"]})).json() == {"message_types": ["sms"]}
    assert (await api.put("/guardian/factors/phone/message-types",
                          json={"message_types": ["sms", "voice"]})).status_code == 409


async def test_mfa_policies_are_read_and_set(api, tenant):
    assert (await api.get("/guardian/policies")).json() == []  # a new tenant: MFA "Never"
    assert (await api.put("/guardian/policies", json=["all-applications"])).json() == ["all-applications"]
    assert (await api.get("/guardian/policies")).json() == ["all-applications"]
    for bad in (["sometimes"], {"policies": []}, ["all-applications", "confidence-score"]):
        assert (await api.put("/guardian/policies", json=bad)).status_code == 400
    assert tenant.state()["phone"]["mfa_policies"] == ["all-applications"]
