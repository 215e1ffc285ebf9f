"""One duration grammar: the CRD's pattern is the relay's, and every window the API server
accepts is one the relay runs with (no crash-loop on ``1h30m``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from otp_operator.spec import window_seconds
from otp_relay import config
from otp_relay.durations import DURATION_PATTERN, parse_duration

CRD = Path(__file__).resolve().parents[2] / "crds" / "otpchannels.otprelay.io.yaml"


def _window_schemas() -> list[dict]:
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    policy = spec["properties"]["policy"]["properties"]
    return [policy[limit]["properties"]["window"] for limit in ("perRecipient", "globalLimit")]


def test_the_crd_uses_the_relays_duration_pattern() -> None:
    for schema in _window_schemas():
        assert schema["pattern"] == DURATION_PATTERN
        [rule] = schema["x-kubernetes-validations"]
        assert "duration('1s')" in rule["rule"] and "duration('24h')" in rule["rule"]


def _cel_duration_seconds(text: str) -> int:
    """What CEL's duration() makes of a string the pattern admits (h, m, s summed)."""
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        else:
            total += int(number) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total


crd_windows = st.from_regex(DURATION_PATTERN, fullmatch=True).filter(
    lambda w: w != "" and 1 <= _cel_duration_seconds(w) <= 24 * 3600)


@given(crd_windows, st.integers(1, 1000))
def test_every_crd_valid_window_runs_in_the_relay(window: str, limit: int) -> None:
    seconds = _cel_duration_seconds(window)
    assert parse_duration(window) == seconds
    assert window_seconds(window) == seconds
    # the operator hands the relay "<limit>/<window>"
    assert config.Rate.parse(f"{limit}/{window}") == config.Rate(limit, float(seconds))


def test_the_crash_loop_window() -> None:
    assert config.Rate.parse("5/1h30m") == config.Rate(5, 5400.0)
