"""The Argo CD health check (Lua) against OtpChannels in each state, run by a real Lua interpreter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from otp_operator import status

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO_ROOT / "charts" / "otp-relay-operator" / "files" / "argocd" / "otpchannel-health.lua"
CHANNELS = list(yaml.safe_load_all((Path(__file__).parent / "channels.yaml").read_text()))
EXPECTED = "test.otprelay.io/expected-health"
CONDITION_KEYS = {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"}
# Argo CD runs gopher-lua (Lua 5.1); Debian's lua5.4 runs the same script (it uses nothing newer).
RUNNER = 'obj = {obj}\nlocal hs = dofile({script})\nio.write(hs.status, "\\n", hs.message or "")\n'


def lua_literal(value: object) -> str:
    """A Lua table constructor for a JSON-like value (as Argo CD hands the object to the script)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "nil"
    return json.dumps(str(value), ensure_ascii=False)  # \" \\ \n \t mean the same in Lua


def health(obj: dict) -> tuple[str, str]:
    lua = shutil.which("lua5.4")
    assert lua, "lua5.4 is missing: `make lua` installs it from Debian"
    script = RUNNER.format(obj=lua_literal(obj), script=json.dumps(str(HEALTH_LUA)))
    result = subprocess.run([lua, "-"], input=script, capture_output=True, text=True, timeout=30, check=True)
    state, _, message = result.stdout.partition("\n")
    return state, message


@pytest.mark.parametrize("channel", CHANNELS, ids=[c["metadata"]["name"] for c in CHANNELS])
def test_health_of_each_state(channel: dict) -> None:
    state, message = health(channel)
    assert state == channel["metadata"]["annotations"][EXPECTED]
    conditions = {c["type"]: c for c in (channel.get("status") or {}).get("conditions", [])}
    for type_ in (status.STALLED, status.RECONCILING):
        if type_ in conditions and channel["status"]["observedGeneration"] == channel["metadata"]["generation"]:
            assert conditions[type_]["message"] in message, "the condition that decided is what Argo CD shows"


def test_fixtures_are_shaped_like_the_operators_status() -> None:
    assert {c["metadata"]["annotations"][EXPECTED] for c in CHANNELS} == {"Healthy", "Progressing", "Degraded",
                                                                           "Suspended"}
    for channel in CHANNELS:
        for condition in (channel.get("status") or {}).get("conditions", []):
            assert set(condition) == CONDITION_KEYS
            assert condition["status"] in ("True", "False", "Unknown")
            if condition["type"] in (status.RECONCILING, status.STALLED):
                assert condition["status"] == "True", "abnormal-true conditions are present only while true"


def test_readme_shows_the_shipped_script() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"resource\.customizations\.health\.otprelay\.io_OtpChannel: \|\n((?:(?: {4}.*)?\n)+)", readme)
    assert match, "README's GitOps section has the argocd-cm snippet"
    shown = "\n".join(line[4:] for line in match.group(1).splitlines()).strip()
    assert shown == HEALTH_LUA.read_text().strip()
