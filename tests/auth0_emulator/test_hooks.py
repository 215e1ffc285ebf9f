"""Legacy Hooks: one enabled per trigger, secrets that never read back."""

from __future__ import annotations

import pytest
from auth0.management.errors import ConflictError

from tests.fixtures.auth0 import route_phone_messages

from .conftest import NO_RETRY

SCRIPT = "module.exports = function (recipient, text, context, cb) { cb(null, {}); };"


async def _hook(api, name="otp-hook", enabled=True, script=SCRIPT):
    response = await api.post("/hooks", json={"name": name, "script": script,
                                              "triggerId": "send-phone-message",
                                              "enabled": enabled})
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_returns_auth0_shape_and_ids(api):
    hook = await _hook(api)
    assert hook["id"].startswith("01") and len(hook["id"]) == 26
    assert {k: hook[k] for k in ("name", "triggerId", "enabled", "script")} == {
        "name": "otp-hook", "triggerId": "send-phone-message", "enabled": True,
        "script": SCRIPT}
    assert hook["dependencies"] == {}


async def test_only_one_hook_is_enabled_per_trigger(api, tenant):
    first = await _hook(api, "first")
    second = await _hook(api, "second")
    assert second["enabled"] is False
    refused = await api.patch(f"/hooks/{second['id']}", json={"enabled": True})
    assert refused.status_code == 409
    assert "first" in refused.json()["message"]
    await api.patch(f"/hooks/{first['id']}", json={"enabled": False})
    assert (await api.patch(f"/hooks/{second['id']}", json={"enabled": True})).json()[
        "enabled"] is True
    enabled = [h["name"] for h in tenant.state()["hooks"] if h["enabled"]]
    assert enabled == ["second"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "-bad-", "script": SCRIPT, "triggerId": "send-phone-message"}, "pattern"),
    ({"name": "ok", "script": SCRIPT, "triggerId": "post-login"}, "post-login"),
    ({"name": "ok", "triggerId": "send-phone-message"}, "Missing required property: script"),
])
async def test_invalid_hooks_are_refused(api, body, fragment):
    response = await api.post("/hooks", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


async def test_patch_cannot_change_the_trigger(api):
    hook = await _hook(api)
    response = await api.patch(f"/hooks/{hook['id']}", json={"triggerId": "post-login"})
    assert response.status_code == 400
    assert "triggerId" in response.json()["message"]


async def test_secrets_read_back_as_placeholder_and_writing_it_back_overwrites(api, tenant):
    hook = await _hook(api, script=(
        "module.exports = function (recipient, text, context, cb) {"
        " if (context.webtask.secrets.RELAY_SIGNING_KEY !== 'k1') return cb(new Error("
        "'key is ' + context.webtask.secrets.RELAY_SIGNING_KEY)); cb(null, {}); };"))
    url = f"/hooks/{hook['id']}/secrets"
    route_phone_messages(tenant, "legacy-hook")
    added = await api.post(url, json={"RELAY_SIGNING_KEY": "k1", "RELAY_URL": "https://r"})
    assert (added.status_code, added.json()) == (201, {})
    assert (await api.get(url)).json() == {"RELAY_SIGNING_KEY": "_VALUE_NOT_SHOWN_",
                                           "RELAY_URL": "_VALUE_NOT_SHOWN_"}
    assert tenant.fire_phone_message(trigger="hook").outcome == "success"
    duplicate = await api.post(url, json={"RELAY_URL": "https://other"})
    assert duplicate.status_code == 409
    unknown = await api.patch(url, json={"NOPE": "x"})
    assert unknown.status_code == 404
    # The trap: echoing GET's answer back replaces the real value with the placeholder.
    echoed = await api.patch(url, json=(await api.get(url)).json())
    assert (echoed.status_code, echoed.json()) == (201, {})
    result = tenant.fire_phone_message(trigger="hook")
    assert (result.outcome, result.reason) == ("error", "key is _VALUE_NOT_SHOWN_")
    assert (await api.request("DELETE", url, json=["RELAY_URL"])).status_code == 204
    assert list((await api.get(url)).json()) == ["RELAY_SIGNING_KEY"]
    assert tenant.state()["hooks"][0]["secrets"] == ["RELAY_SIGNING_KEY"]


async def test_at_most_twenty_secrets(api):
    hook = await _hook(api)
    url = f"/hooks/{hook['id']}/secrets"
    assert (await api.post(url, json={f"S{i}": "v" for i in range(20)})).status_code == 201
    too_many = await api.post(url, json={"S20": "v"})
    assert too_many.status_code == 400
    assert "20" in too_many.json()["message"]


async def test_list_filters_and_sdk_pages(api, sdk):
    await _hook(api, "one")
    await _hook(api, "two")
    totals = (await api.get("/hooks", params={"include_totals": "true", "enabled": "true"}))
    assert totals.json()["total"] == 1
    assert totals.json()["hooks"][0]["name"] == "one"
    plain = (await api.get("/hooks", params={"triggerId": "send-phone-message"})).json()
    assert isinstance(plain, list) and len(plain) == 2
    pager = await sdk.hooks.list(per_page=1)
    assert sorted([h.name async for h in pager]) == ["one", "two"]


async def test_sdk_hook_lifecycle(sdk, tenant):
    hook = await sdk.hooks.create(name="sdk-hook", script=SCRIPT,
                                  trigger_id="send-phone-message", enabled=True)
    await sdk.hooks.secrets.create(hook.id, request={"RELAY_URL": "https://r"})
    assert await sdk.hooks.secrets.get(hook.id) == {"RELAY_URL": "_VALUE_NOT_SHOWN_"}
    await sdk.hooks.secrets.update(hook.id, request={"RELAY_URL": "https://s"})
    await sdk.hooks.secrets.delete(hook.id, request=["RELAY_URL"])
    other = await sdk.hooks.create(name="other", script=SCRIPT,
                                   trigger_id="send-phone-message")
    with pytest.raises(ConflictError):
        await sdk.hooks.update(other.id, enabled=True, request_options=NO_RETRY)
    updated = await sdk.hooks.update(hook.id, enabled=False)
    assert updated.enabled is False
    await sdk.hooks.delete(hook.id)
    assert [h["name"] for h in tenant.state()["hooks"]] == ["other"]


async def test_hook_secret_scopes_are_auth0s(auth0_tenant):
    """POST and PATCH /hooks/{id}/secrets need update:hooks (create:hooks is not enough),
    DELETE needs delete:hooks."""
    import httpx  # noqa: PLC0415

    from otp_sandbox.auth0_emulator import ALL_SCOPES, Client  # noqa: PLC0415

    from .conftest import token_for  # noqa: PLC0415

    creator = Client("creator", "pw-creator", scopes=("read:hooks", "create:hooks"))
    updater = Client("updater", "pw-updater", scopes=("update:hooks",))
    tenant = auth0_tenant(clients=[creator, updater, Client("admin", "pw-admin", scopes=ALL_SCOPES)])
    tokens = [token_for(tenant, i) for i in range(3)]
    async with httpx.AsyncClient(base_url=f"{tenant.base_url}/api/v2", verify=tenant.ssl_context) as http:
        def auth(i):
            return {"Authorization": f"Bearer {tokens[i]}"}
        hook = (await http.post("/hooks", headers=auth(0), json={
            "name": "h", "script": SCRIPT, "triggerId": "send-phone-message"})).json()
        path = f"/hooks/{hook['id']}/secrets"
        refused = await http.post(path, headers=auth(0), json={"A": "1"})
        assert refused.status_code == 403 and "update:hooks" in refused.json()["message"]
        assert (await http.post(path, headers=auth(1), json={"A": "1"})).status_code == 201
        assert (await http.patch(path, headers=auth(1), json={"A": "2"})).status_code == 201
        denied = await http.request("DELETE", path, headers=auth(1), json=["A"])
        assert denied.status_code == 403 and "delete:hooks" in denied.json()["message"]
        assert (await http.request("DELETE", path, headers=auth(2), json=["A"])).status_code == 204
