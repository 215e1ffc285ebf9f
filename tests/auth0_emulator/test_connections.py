"""Passwordless SMS connections: listed by strategy, options replaced as a whole, and a
passwordless code sent only along the path the connection's options give."""

from __future__ import annotations

from .conftest import deployed_action

TWILIO = {"name": "sms", "options": {"provider": "twilio", "twilio_sid": "ACx", "twilio_token": "t0ken",
                                     "from": "+15550001111", "totp": {"time_step": 300, "length": 6}}}
CPP_CODE = "exports.onExecuteCustomPhoneProvider = async (event, api) => {};"


async def test_sms_connections_are_listed_with_their_options_and_patched_as_a_whole(api, tenant):
    tenant.set_sms_connections(TWILIO, {"name": "sms-gw", "options": {
        "provider": "sms_gateway", "gateway_url": "https://sms.example/send"}})
    listed = (await api.get("/connections", params={"strategy": "sms", "take": 1})).json()
    assert [c["name"] for c in listed["connections"]] == ["sms"] and listed["next"] == "1"
    rest = (await api.get("/connections", params={"strategy": "sms", "take": 1, "from": "1"})).json()
    assert [c["name"] for c in rest["connections"]] == ["sms-gw"] and "next" not in rest
    sms = listed["connections"][0]
    assert sms["strategy"] == "sms" and sms["options"] == TWILIO["options"]
    patched = await api.patch(f"/connections/{sms['id']}", json={"options": {"use_phone_provider": True}})
    assert patched.json()["options"] == {"use_phone_provider": True}  # the whole object replaced
    bad = await api.patch(f"/connections/{sms['id']}", json={"options": {"provider": "nexmo"}})
    assert bad.status_code == 400


async def test_a_passwordless_code_goes_where_the_connection_says(api, tenant):
    tenant.route_phone_messages_to("phone-provider")
    action = await deployed_action(api, "cpp", "custom-phone-provider", CPP_CODE)
    await api.patch("/actions/triggers/custom-phone-provider/bindings",
                    json={"bindings": [{"ref": {"type": "action_id", "value": action["id"]}}]})
    await api.post("/branding/phone/providers", json={
        "name": "custom", "configuration": {"delivery_methods": ["text"]}, "credentials": {}})
    tenant.set_sms_connections(TWILIO)
    twilio = tenant.fire_phone_message(connection="sms")
    assert (twilio.outcome, twilio.ran) == ("no-handler", [])
    assert "Twilio" in twilio.reason
    assert tenant.fire_phone_message().outcome == "success"  # MFA does reach the provider
    tenant.set_sms_connections({"name": "sms", "options": {**TWILIO["options"], "use_phone_provider": True}})
    assert tenant.fire_phone_message(connection="sms").ran == ["cpp"]
    # Off the Unified Phone Experience the flag does not apply: the connection's own provider.
    tenant.set_phone(phone_consolidated_experience=False)
    assert tenant.fire_phone_message(connection="sms").outcome == "no-handler"


def test_connections_need_read_connections(auth0_tenant):
    import httpx  # noqa: PLC0415

    from otp_sandbox.auth0_emulator import Client  # noqa: PLC0415

    from .conftest import token_for  # noqa: PLC0415

    tenant = auth0_tenant(clients=[Client("r", "pw-r", scopes=("read:actions",))])
    answer = httpx.get(f"{tenant.base_url}/api/v2/connections", verify=tenant.ssl_context,
                       headers={"Authorization": f"Bearer {token_for(tenant)}"})
    assert answer.status_code == 403 and "read:connections" in answer.json()["message"]


def test_connection_options_need_the_options_scopes(auth0_tenant):
    """Since Auth0's options-scope migration (2025-07-08): no `options` in the answers without
    read:connections_options, and no PATCH of them without update:connections_options."""
    import httpx  # noqa: PLC0415

    from otp_sandbox.auth0_emulator import Client  # noqa: PLC0415

    from .conftest import token_for  # noqa: PLC0415

    tenant = auth0_tenant(clients=[Client("r", "pw-r", scopes=("read:connections", "update:connections"))])
    tenant.set_sms_connections(TWILIO)
    with httpx.Client(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context,
                      headers={"Authorization": f"Bearer {token_for(tenant)}"}) as api:
        [listed] = api.get("/connections", params={"strategy": "sms"}).json()
        assert listed["name"] == "sms" and "options" not in listed
        assert "options" not in api.get(f"/connections/{listed['id']}").json()
        refused = api.patch(f"/connections/{listed['id']}", json={"options": {"use_phone_provider": True}})
        assert refused.status_code == 403 and "update:connections_options" in refused.json()["message"]
        assert api.patch(f"/connections/{listed['id']}", json={"enabled_clients": []}).status_code == 200
    assert tenant.state()["connections"][0]["options"] == TWILIO["options"]  # nothing lost

