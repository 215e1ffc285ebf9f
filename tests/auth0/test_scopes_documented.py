"""The scopes a user is told to grant (README "Auth0" table, examples/secrets.yaml) are exactly
those the operator's pre-check demands: one source, `model.scopes_for`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from otp_operator.auth0.model import INTEGRATIONS, LOG_STREAM_SCOPES, manage_routing_scopes_for, scopes_for

ROOT = Path(__file__).resolve().parents[2]


def _readme_rows() -> dict[str, tuple[set[str], set[str]]]:
    section = ROOT.joinpath("README.md").read_text().split("## Auth0", 1)[1].split("\n## ", 1)[0]
    table = section.split("Management API scopes of the M2M application", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in INTEGRATIONS:
            rows[cells[0].strip("`")] = (set(cells[1].strip("`").split()), set(cells[2].strip("`").split()))
    return rows


def _example_rows() -> dict[str, set[str]]:
    text = ROOT.joinpath("examples", "secrets.yaml").read_text()
    return {m[1]: set(m[2].split()) for m in re.finditer(r"^\s*#\s+([\w-]+):\s+([\w: ]+)$", text, re.M)}


@pytest.mark.parametrize("integration", INTEGRATIONS)
def test_readme_and_example_list_the_scopes_the_pre_check_demands(integration):
    readme = _readme_rows()
    assert readme[integration] == (set(scopes_for(integration)), set(manage_routing_scopes_for(integration)))
    example = _example_rows()
    assert example[integration] == set(scopes_for(integration))
    told = example["manageRouting"] | (example["manageRouting-phone-provider"]
                                       if integration == "phone-provider" else set())
    assert told == set(manage_routing_scopes_for(integration))


def test_conversion_scopes_are_documented_apart_and_needed_only_with_it():
    example = _example_rows()
    assert example["conversion"] == set(LOG_STREAM_SCOPES)
    section = ROOT.joinpath("README.md").read_text().split("## Auth0", 1)[1].split("\n## ", 1)[0]
    told = section.split("With `spec.conversion`", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"\w+:log_streams", told)) == set(LOG_STREAM_SCOPES)
    assert all(not LOG_STREAM_SCOPES & scopes_for(integration) for integration in INTEGRATIONS)
