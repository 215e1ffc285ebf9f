"""Replays requests recorded against real Auth0 tenants (auth0/auth0-deploy-cli's e2e recordings,
vendored in recordings/deploy-cli.json with their source) and checks the emulator answers as the
real tenant did: same status, same shape, same values where the value is the behaviour (action
status, ``deployed``, ``binding_policy``, factor states)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from .conftest import wait_built, wait_deployed

RECORDINGS = json.loads((Path(__file__).parent / "recordings" / "deploy-cli.json").read_text())
# Fields whose value is behaviour, compared wherever they occur in a "keys" comparison.
VALUE_FIELDS = frozenset({"status", "deployed", "all_changes_deployed", "channel", "disabled",
                          "binding_policy", "provider", "message_types", "enabled"})


def _json_type(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"  # JSON has one number type
    return type(value).__name__ if value is not None else "null"


def same_shape(ours: Any, real: Any, where: str = "$") -> list[str]:
    """Differences in keys (recursively) and in the values of VALUE_FIELDS."""
    if isinstance(real, dict) and isinstance(ours, dict):
        problems = []
        if set(ours) != set(real):
            problems.append(f"{where}: keys {sorted(set(ours) ^ set(real))} differ")
        for key in set(ours) & set(real):
            if key in VALUE_FIELDS and not isinstance(real[key], (dict, list)) and ours[key] != real[key]:
                problems.append(f"{where}.{key}: {ours[key]!r} != {real[key]!r}")
            problems += same_shape(ours[key], real[key], f"{where}.{key}")
        return problems
    if isinstance(real, list) and isinstance(ours, list):
        return same_shape(ours[0], real[0], f"{where}[0]") if ours and real else []
    if _json_type(ours) != _json_type(real) and None not in (ours, real):
        return [f"{where}: {_json_type(ours)} != {_json_type(real)}"]
    return []


def check(exchange: dict[str, Any], answer: httpx.Response) -> None:
    assert answer.status_code == exchange["status"], (exchange["note"], answer.text)
    ours = answer.json() if answer.content else None
    real, mode = exchange["response"], exchange["compare"]
    if mode == "exact":
        assert ours == real, exchange["note"]
    elif mode == "keys":
        assert same_shape(ours, real) == [], exchange["note"]
    elif mode == "common-types":
        assert {k: _json_type(ours[k]) for k in set(ours) & set(real)} == {
            k: _json_type(real[k]) for k in set(ours) & set(real)}, exchange["note"]
        assert len(set(ours) & set(real)) >= 8, "too little in common to compare"
    elif mode == "subset-list":
        (key,) = real
        missing = [item for item in real[key] if item not in ours[key]]
        assert missing == [], exchange["note"]


async def replay(api: httpx.AsyncClient, index: int, **ids: str) -> httpx.Response:
    exchange = RECORDINGS["exchanges"][index]
    path = exchange["path"].format(**ids).removeprefix("/api/v2")
    answer = await api.request(exchange["method"], path, json=exchange["body"])
    check(exchange, answer)
    return answer


def index_of(note: str) -> int:
    return next(i for i, e in enumerate(RECORDINGS["exchanges"]) if e["note"] == note)


async def test_the_emulator_answers_recorded_real_tenant_requests_as_the_tenant_did(api, tenant):
    # The recorded tenant leaves phone_consolidated_experience out of its settings and its legacy
    # provider answers: it has the legacy flag, so the legacy path is live.
    tenant.set_phone(phone_consolidated_experience=None, legacy_mfa_phone_provider=True)
    done: set[int] = set()

    async def step(note: str, **ids: str) -> httpx.Response:
        index = index_of(note)
        done.add(index)
        return await replay(api, index, **ids)

    for note in ("triggers: binding_policy and runtimes of the phone triggers", "tenant settings",
                 "MFA factors of a tenant with every factor off", "sms factor off",
                 "message types", "message types read back",
                 "legacy MFA phone provider (tenant off the Unified Phone Experience)",
                 "legacy MFA phone provider read back", "hooks page with totals",
                 "empty bindings page"):
        await step(note)

    twilio = await api.post("/branding/phone/providers", json={
        "name": "twilio", "disabled": False, "credentials": {"auth_token": "t0ken"},
        "configuration": {"sid": "28y8y32232", "default_from": "+1234567890",
                          "delivery_methods": ["text"]}})
    await step("a twilio phone provider listed", provider_id=twilio.json()["id"])
    await step("update the twilio provider", provider_id=twilio.json()["id"])

    action_id = (await step("create an action: status pending")).json()["id"]
    await wait_built(api, action_id)
    first = (await api.post(f"/actions/actions/{action_id}/deploy")).json()
    await wait_deployed(api, action_id, first["id"])
    await step("a deployed action listed: current_version, deployed_version")
    await step("update the draft", action_id=action_id)
    await wait_built(api, action_id)
    await step("deploy answers before it finished: deployed false", action_id=action_id)
    await step("delete with force", action_id=action_id)
    assert done == set(range(len(RECORDINGS["exchanges"]))), "every vendored exchange replayed"
