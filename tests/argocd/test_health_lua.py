"""The Argo CD health check (Lua) against OtpChannels in each state, run by the interpreter and
libraries Argo CD gives a health script (gopher-lua, Lua 5.1, no string library); live channels
are judged the same way in tests/operator/test_kstatus.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from otp_operator import status
from tests.gitops.tools import CHANNEL_HEALTH_LUA, argocd_health as health

REPO_ROOT = Path(__file__).resolve().parents[2]
CHANNELS = list(yaml.safe_load_all((Path(__file__).parent / "channels.yaml").read_text()))
EXPECTED = "test.otprelay.io/expected-health"
CONDITION_KEYS = {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"}


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
    assert shown == CHANNEL_HEALTH_LUA.read_text().strip()
