"""Actions: draft pending -> building -> packaged (or retrying) -> built | failed, asynchronous
deploys and versions, bindings that replace the list, Auth0's documented entity limits."""

from __future__ import annotations

import asyncio

import pytest
from auth0.management.errors import BadRequestError
from auth0.management.types import ActionBindingRef, ActionBindingWithRef

from tests.support.auth0 import paced_request

from .conftest import NO_RETRY, deployed_action, wait_built, wait_deployed

CPP = [{"id": "custom-phone-provider", "version": "v1"}]
SPM = [{"id": "send-phone-message", "version": "v2"}]
CODE = "exports.onExecuteSendPhoneMessage = async (event, api) => {};"
BUILDING = ("pending", "building", "packaged", "retrying")  # what real tenants show before the end


async def test_deploy_before_the_build_finished_fails_then_succeeds(api):
    created = await api.post("/actions/actions", json={
        "name": "otp", "supported_triggers": SPM, "code": CODE,
        "secrets": [{"name": "RELAY_SIGNING_KEY", "value": "k1"}]})
    assert created.status_code == 201
    action = created.json()
    assert action["status"] == "pending"
    assert "deployed_version" not in action and action["all_changes_deployed"] is False
    assert action["secrets"][0]["name"] == "RELAY_SIGNING_KEY"
    assert "value" not in action["secrets"][0]
    early = await api.post(f"/actions/actions/{action['id']}/deploy")
    assert early.status_code == 400
    assert early.json()["message"].startswith("A draft must be in the 'built' state")
    await wait_built(api, action["id"])
    deployed = await api.post(f"/actions/actions/{action['id']}/deploy")
    assert deployed.status_code == 200
    version = deployed.json()
    # Deploys are asynchronous: the answer says not deployed yet, and nothing serves yet.
    assert (version["number"], version["deployed"], version["status"]) == (1, False, "built")
    assert "deployed_version" not in (await api.get(f"/actions/actions/{action['id']}")).json()
    current = await wait_deployed(api, action["id"], version["id"])
    assert current["all_changes_deployed"] is True
    assert current["deployed_version"]["deployed"] is True
    assert current["current_version"]["number"] == 1


async def test_patch_changes_only_the_draft_until_the_next_deploy(api, tenant):
    action = await deployed_action(api, "otp", "send-phone-message", CODE, {"A": "1"})
    patched = await api.patch(f"/actions/actions/{action['id']}",
                              json={"code": CODE + "\n// v2"})
    assert patched.json()["status"] in BUILDING
    assert patched.json()["all_changes_deployed"] is False
    assert patched.json()["deployed_version"]["code"] == CODE
    await wait_built(api, action["id"])
    second = (await api.post(f"/actions/actions/{action['id']}/deploy")).json()
    await wait_deployed(api, action["id"], second["id"])
    versions = (await api.get(f"/actions/actions/{action['id']}/versions")).json()
    assert versions["total"] == 2
    assert [(v["number"], v["deployed"]) for v in versions["versions"]] == [(2, True),
                                                                              (1, False)]
    first = versions["versions"][1]["id"]
    rollback = await api.post(f"/actions/actions/{action['id']}/versions/{first}/deploy")
    assert rollback.json()["number"] == 3
    assert rollback.json()["code"] == CODE
    await wait_deployed(api, action["id"], rollback.json()["id"])
    assert tenant.state()["actions"][0]["deployed_version"] == 3


async def test_patch_secrets_replaces_the_set_and_keeps_values_sent_without_one(api, tenant):
    action = await deployed_action(api, "otp", "send-phone-message", CODE,
                                   {"RELAY_URL": "https://a", "RELAY_SIGNING_KEY": "k1"})
    response = await api.patch(f"/actions/actions/{action['id']}", json={
        "secrets": [{"name": "RELAY_URL"}, {"name": "EXTRA", "value": "x"}]})
    assert response.status_code == 200
    assert sorted(s["name"] for s in response.json()["secrets"]) == ["EXTRA", "RELAY_URL"]
    missing = await api.patch(f"/actions/actions/{action['id']}",
                              json={"secrets": [{"name": "NEW"}]})
    assert missing.status_code == 400
    state = tenant.state()["actions"][0]
    assert state["secrets"] == ["EXTRA", "RELAY_URL"]
    assert state["versions"][0]["secrets"] == ["RELAY_SIGNING_KEY", "RELAY_URL"]
    assert "k1" not in str(state) and "https://a" not in str(state)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"supported_triggers": SPM, "code": CODE}, "Missing required property: name"),
    ({"name": "x", "code": CODE}, "Missing required property: supported_triggers"),
    ({"name": "x", "supported_triggers": [{"id": "nope", "version": "v1"}]}, "nope"),
    ({"name": "x", "supported_triggers": SPM, "colour": "red"},
     "Additional properties not allowed: colour"),
    ({"name": "x", "supported_triggers": SPM, "runtime": "node8"}, "node8"),
])
async def test_invalid_action_bodies_are_400_payload_errors(api, body, fragment):
    response = await api.post("/actions/actions", json=body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_body"
    assert fragment in response.json()["message"]


async def test_duplicate_names_conflict_and_unknown_ids_are_404(api):
    body = {"name": "dup", "supported_triggers": SPM, "code": CODE}
    assert (await api.post("/actions/actions", json=body)).status_code == 201
    assert (await api.post("/actions/actions", json=body)).status_code == 409
    missing = await api.get("/actions/actions/5b0a6d44-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["statusCode"] == 404


async def test_list_filters_and_pages_like_auth0_and_the_sdk_pager(api, sdk):
    for index in range(3):
        await api.post("/actions/actions", json={"name": f"a{index}", "supported_triggers": SPM,
                                                 "code": CODE})
    await api.post("/actions/actions", json={"name": "cpp", "supported_triggers": CPP,
                                             "code": "x"})
    first = (await api.get("/actions/actions", params={
        "triggerId": "send-phone-message", "per_page": 2, "page": 0})).json()
    assert (first["total"], first["per_page"], len(first["actions"])) == (3, 2, 2)
    last = (await api.get("/actions/actions", params={
        "triggerId": "send-phone-message", "per_page": 2, "page": 1})).json()
    assert len(last["actions"]) == 1
    named = (await api.get("/actions/actions", params={"actionName": "cpp"})).json()
    assert [a["name"] for a in named["actions"]] == ["cpp"]
    pager = await sdk.actions.list(trigger_id="send-phone-message", per_page=2)
    assert sorted([a.name async for a in pager]) == ["a0", "a1", "a2"]


async def test_bindings_patch_replaces_the_whole_list(api, tenant):
    foreign = await deployed_action(api, "someone-elses", "send-phone-message", CODE)
    ours = await deployed_action(api, "ours", "send-phone-message", CODE)
    url = "/actions/triggers/send-phone-message/bindings"
    one = await api.patch(url, json={"bindings": [
        {"ref": {"type": "action_id", "value": foreign["id"]}, "display_name": "theirs"}]})
    assert one.status_code == 200
    both = await api.patch(url, json={"bindings": [
        {"ref": {"type": "binding_id", "value": one.json()["bindings"][0]["id"]}},
        {"ref": {"type": "action_name", "value": "ours"}, "display_name": "ours"}]})
    assert [b["action"]["name"] for b in both.json()["bindings"]] == ["someone-elses", "ours"]
    # Every PATCH issues new binding ids, also for the binding that stayed.
    assert both.json()["bindings"][0]["id"] != one.json()["bindings"][0]["id"]
    listed = (await api.get(url)).json()
    assert len(listed["bindings"]) == 2
    assert [b["display_name"] for b in listed["bindings"]] == ["theirs", "ours"]
    # Sending only ours drops the foreign binding: the trap the sync library must avoid.
    await api.patch(url, json={"bindings": [{"ref": {"type": "action_id",
                                                     "value": ours["id"]}}]})
    assert [b["action_name"] for b in tenant.state()["bindings"]["send-phone-message"]] == [
        "ours"]


async def test_binding_refuses_undeployed_wrong_trigger_and_unknown_trigger(api):
    draft = (await api.post("/actions/actions", json={
        "name": "draft", "supported_triggers": SPM, "code": CODE})).json()
    cpp = await deployed_action(api, "cpp", "custom-phone-provider", "x")
    url = "/actions/triggers/send-phone-message/bindings"
    undeployed = await api.patch(url, json={"bindings": [
        {"ref": {"type": "action_id", "value": draft["id"]}}]})
    assert undeployed.status_code == 400
    assert "deployed" in undeployed.json()["message"]
    wrong = await api.patch(url, json={"bindings": [
        {"ref": {"type": "action_id", "value": cpp["id"]}}]})
    assert wrong.status_code == 400
    assert "does not support trigger" in wrong.json()["message"]
    unknown = await api.get("/actions/triggers/no-such-trigger/bindings")
    assert unknown.status_code == 404


async def test_custom_phone_provider_trigger_takes_exactly_one_binding(api):
    cpp = await deployed_action(api, "cpp", "custom-phone-provider", "x")
    other = await deployed_action(api, "other", "custom-phone-provider", "x")
    url = "/actions/triggers/custom-phone-provider/bindings"
    response = await api.patch(url, json={"bindings": [
        {"ref": {"type": "action_id", "value": cpp["id"]}}]})
    assert response.status_code == 200
    assert (await api.get(url)).json()["bindings"][0]["action"]["id"] == cpp["id"]
    two = await api.patch(url, json={"bindings": [
        {"ref": {"type": "action_id", "value": cpp["id"]}},
        {"ref": {"type": "action_id", "value": other["id"]}}]})
    assert two.status_code == 400 and "Only one action" in two.json()["message"]


async def test_binding_right_after_deploy_conflicts_until_the_deploy_finished(api, tenant):
    tenant.set_deploy_seconds(3)
    created = (await api.post("/actions/actions", json={
        "name": "late", "supported_triggers": SPM, "code": CODE})).json()
    await wait_built(api, created["id"])
    version = (await api.post(f"/actions/actions/{created['id']}/deploy")).json()
    url = "/actions/triggers/send-phone-message/bindings"
    body = {"bindings": [{"ref": {"type": "action_id", "value": created["id"]}}]}
    early = await api.patch(url, json=body)
    assert early.status_code == 409, early.text
    await wait_deployed(api, created["id"], version["id"])
    assert (await api.patch(url, json=body)).status_code == 200


@pytest.mark.parametrize(("code", "dependencies", "fragment"), [
    ("exports.onExecuteSendPhoneMessage = async (event, api) => {", [], "SyntaxError"),
    (CODE, [{"name": "no-such-package-anywhere", "version": "1.0.0"}], "no-such-package-anywhere"),
])
async def test_a_build_can_fail_and_then_cannot_be_deployed(api, code, dependencies, fragment):
    created = (await api.post("/actions/actions", json={
        "name": "broken", "supported_triggers": SPM, "code": code,
        "dependencies": dependencies})).json()
    assert created["status"] == "pending"
    for _ in range(200):
        action = (await api.get(f"/actions/actions/{created['id']}")).json()
        if action["status"] not in BUILDING:
            break
        await asyncio.sleep(0.05)
    assert action["status"] == "failed"
    assert fragment in action["errors"][0]["msg"]
    refused = await api.post(f"/actions/actions/{created['id']}/deploy")
    assert refused.status_code == 400


async def test_triggers_list_the_phone_triggers_as_trigger_bound(api):
    triggers = (await api.get("/actions/triggers")).json()["triggers"]
    phone = {(t["id"], t["version"]): t for t in triggers if "phone" in t["id"]}
    assert set(phone) == {("send-phone-message", "v2"), ("send-phone-message", "v1"),
                          ("custom-phone-provider", "v1")}
    assert {t["binding_policy"] for t in phone.values()} == {"trigger-bound"}
    assert phone[("custom-phone-provider", "v1")]["runtimes"] == ["node18-actions", "node22"]


async def test_deleting_a_bound_action_needs_force_which_unbinds_it(api, tenant):
    ours = await deployed_action(api, "ours", "send-phone-message", CODE)
    await api.patch("/actions/triggers/send-phone-message/bindings", json={"bindings": [
        {"ref": {"type": "action_id", "value": ours["id"]}}]})
    refused = await api.delete(f"/actions/actions/{ours['id']}")
    assert refused.status_code == 409
    forced = await api.delete(f"/actions/actions/{ours['id']}", params={"force": "true"})
    assert forced.status_code == 204
    assert tenant.state()["bindings"]["send-phone-message"] == []
    assert tenant.state()["actions"] == []


async def test_sdk_round_trip_create_deploy_bind(sdk, tenant):
    action = await sdk.actions.create(name="sdk-action", supported_triggers=SPM, code=CODE,
                                      runtime="node22",
                                      secrets=[{"name": "RELAY_URL", "value": "https://r"}])
    assert action.status == "pending"
    with pytest.raises(BadRequestError) as caught:
        await sdk.actions.deploy(action.id, request_options=NO_RETRY)
    assert "'built' state" in caught.value.body["message"]
    for _ in range(100):
        if (await sdk.actions.get(action.id)).status == "built":
            break
        await asyncio.sleep(0.05)
    version = await sdk.actions.deploy(action.id)
    assert version.number == 1 and version.deployed is False
    for _ in range(100):
        if (await sdk.actions.get(action.id)).deployed_version:
            break
        await asyncio.sleep(0.05)
    bindings = await sdk.actions.triggers.bindings.update_many(
        "send-phone-message", bindings=[ActionBindingWithRef(
            ref=ActionBindingRef(type="action_id", value=action.id), display_name="sdk")])
    assert bindings.bindings[0].action.id == action.id
    pager = await sdk.actions.triggers.bindings.list("send-phone-message")
    assert [b.display_name async for b in pager] == ["sdk"]
    versions = await sdk.actions.versions.list(action.id)
    assert [v.number async for v in versions] == [1]
    assert [w.path.rsplit("/", 1)[-1] for w in tenant.writes()] == [
        "actions", "deploy", "deploy", "bindings"]


async def _statuses_until_done(api, action_id: str) -> list[str]:
    seen: list[str] = []
    for _ in range(400):
        status = (await api.get(f"/actions/actions/{action_id}")).json()["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status not in BUILDING:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"still building: {seen}")


@pytest.mark.parametrize("retried", [False, True])
async def test_a_build_goes_through_the_states_real_tenants_report(api, tenant, retried):
    if retried:
        tenant.retry_builds(1)
    action = (await api.post("/actions/actions", json={
        "name": "otp", "supported_triggers": SPM, "code": CODE})).json()
    seen = await _statuses_until_done(api, action["id"])
    middle = "retrying" if retried else "packaged"
    assert seen == ["pending", "building", middle, "built"]
    if retried:  # a draft in any state but built cannot be deployed
        again = (await api.patch(f"/actions/actions/{action['id']}", json={"code": CODE + "\n"})).json()
        assert (await api.post(f"/actions/actions/{again['id']}/deploy")).status_code == 400


async def test_entity_limits_are_refused_with_the_limit_named(api):
    secrets = [{"name": f"S{i}", "value": "v"} for i in range(31)]
    too_many = await api.post("/actions/actions", json={"name": "a", "supported_triggers": SPM,
                                                         "code": CODE, "secrets": secrets})
    assert too_many.status_code == 400 and "at most 30 secrets" in too_many.json()["message"]
    long_name = await api.post("/actions/actions", json={
        "name": "b", "supported_triggers": SPM, "code": CODE,
        "secrets": [{"name": "K" * 129, "value": "v"}]})
    assert long_name.status_code == 400 and "at most 128 characters" in long_name.json()["message"]
    long_value = await api.post("/actions/actions", json={
        "name": "c", "supported_triggers": SPM, "code": CODE,
        "secrets": [{"name": "K", "value": "v" * 4097}]})
    assert long_value.status_code == 400 and "at most 4096 characters" in long_value.json()["message"]
    big = await api.post("/actions/actions", json={"name": "d", "supported_triggers": SPM,
                                                   "code": "//" + "x" * 100_000})
    assert big.status_code == 400 and "100 kB" in big.json()["message"]
    modules = [{"name": "lodash", "version": f"4.17.{i}"} for i in range(11)]
    many = await api.post("/actions/actions", json={"name": "e", "supported_triggers": SPM,
                                                    "code": CODE, "dependencies": modules})
    assert many.status_code == 400 and "at most 10 npm modules" in many.json()["message"]
    # Right at the limits is accepted.
    at_limit = await api.post("/actions/actions", json={
        "name": "f", "supported_triggers": SPM, "code": CODE,
        "secrets": [{"name": f"S{i}", "value": "v" * 4096} for i in range(29)] + [{"name": "K" * 128, "value": "v"}]})
    assert at_limit.status_code == 201, at_limit.text
    assert [a["name"] for a in (await api.get("/actions/actions")).json()["actions"]] == ["f"]


async def test_a_tenant_holds_at_most_100_actions(api):
    for i in range(100):
        created = await paced_request(api, "POST", "/actions/actions", json={"name": f"a{i}", "supported_triggers": SPM})
        assert created.status_code == 201, (i, created.text)
    refused = await paced_request(api, "POST", "/actions/actions", json={"name": "one-more", "supported_triggers": SPM})
    assert refused.status_code == 400 and "at most 100 actions" in refused.json()["message"]
    first = (await paced_request(api, "GET", "/actions/actions", params={"actionName": "a0"})).json()["actions"][0]
    assert (await paced_request(api, "DELETE", f"/actions/actions/{first['id']}")).status_code == 204
    again = await paced_request(api, "POST", "/actions/actions", json={"name": "one-more", "supported_triggers": SPM})
    assert again.status_code == 201


async def test_past_50_versions_the_oldest_is_deleted(api, tenant):
    tenant.set_build_seconds(0)
    tenant.set_deploy_seconds(0)
    action = (await api.post("/actions/actions", json={"name": "v", "supported_triggers": SPM, "code": CODE})).json()
    first = None
    for i in range(52):
        await paced_request(api, "PATCH", f"/actions/actions/{action['id']}", json={"code": f"{CODE}//{i}"})
        version = (await paced_request(api, "POST", f"/actions/actions/{action['id']}/deploy")).json()
        first = first or version
    versions = (await paced_request(api, "GET", f"/actions/actions/{action['id']}/versions", params={"per_page": 100})).json()
    numbers = sorted(v["number"] for v in versions["versions"])
    assert numbers == list(range(3, 53))  # 52 made, 50 kept, numbers never reused
    gone = await paced_request(api, "GET", f"/actions/actions/{action['id']}/versions/{first['id']}")
    assert gone.status_code == 404


async def test_a_trigger_takes_at_most_20_bound_actions(api, tenant):
    tenant.set_build_seconds(0)
    tenant.set_deploy_seconds(0)
    ids = []
    for i in range(21):
        ids.append((await deployed_action(api, f"spm{i}", "send-phone-message", CODE))["id"])
    chain = [{"ref": {"type": "action_id", "value": action_id}} for action_id in ids]
    refused = await api.patch("/actions/triggers/send-phone-message/bindings", json={"bindings": chain})
    assert refused.status_code == 400 and "at most 20" in refused.json()["message"]
    accepted = await api.patch("/actions/triggers/send-phone-message/bindings", json={"bindings": chain[:20]})
    assert accepted.status_code == 200, accepted.text
