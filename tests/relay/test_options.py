"""The relay's one table of options (``config.OPTIONS``): what ``--help`` says and what a
setting is when nothing sets it both come from it."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from otp_relay import config
from tests.fixtures.relay import relay_command

REQUIRED_ONLY = {"OTP_RELAY_SUBACCOUNT": "shop_otp", "OTP_RELAY_API_KEY_FILE": "/k/api",
                 "OTP_RELAY_SIGNING_KEY_FILE": "/k/sig"}


def test_every_settings_default_is_its_options_and_what_the_relay_runs_with() -> None:
    defaulted = {f.name: f.default for f in dataclasses.fields(config.Settings)
                 if f.default is not dataclasses.MISSING}
    named = [name for option in config.OPTIONS for name in option.fields]
    assert len(named) == len(set(named)), "a Settings field filled by two options"
    assert set(defaulted) <= set(named), f"defaults not from an option: {set(defaulted) - set(named)}"
    for option in config.OPTIONS:
        if option.parse is not None:
            parsed = option.parse(option.suffix, option.default)
            expected = dict(zip(option.fields, parsed)) if len(option.fields) > 1 else {option.fields[0]: parsed}
            for name, value in expected.items():
                if name in defaulted:
                    assert defaulted[name] == value, (option.flag, name)
    loaded = config.load([], REQUIRED_ONLY)
    ran_with = {name: getattr(loaded, name) for name in defaulted}
    assert ran_with.pop("state_prefix") == "otp-relay:shop_otp"  # the one default load() derives
    assert ran_with == {name: value for name, value in defaulted.items() if name != "state_prefix"}


def test_help_lists_every_option_with_its_variable_and_default() -> None:
    result = subprocess.run([*relay_command(), "--help"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "1000"})
    assert result.returncode == 0, result.stderr
    lines: dict[str, str] = {}  # flag -> its entry (argparse may put the help on the next line)
    flag = ""
    for line in result.stdout.split("options:", 1)[1].splitlines():
        if line.startswith("  --"):
            flag = line.split()[0]
            lines[flag] = line
        elif flag and line.startswith("    "):
            lines[flag] += " " + line.strip()
    assert set(lines) == {option.flag for option in config.OPTIONS}
    for option in config.OPTIONS:
        line = lines[option.flag]
        assert f"[env {option.env}]" in line, line
        if option.required:
            assert "(required)" in line, line
        else:
            assert f"(default {option.shown or option.default or 'none'})" in line, line
    # a few of the defaults operators rely on, spelled as before the table existed
    for flag, default in (("--listen", "0.0.0.0:8080"), ("--per-recipient", "5/10m"), ("--global-limit", "100/s"),
                          ("--idempotency-retention", "30m"), ("--max-in-flight", "256"), ("--deadline", "6"),
                          ("--voice-per-recipient", "3/1h"), ("--code-validity", "5m")):
        assert f"(default {default})" in lines[flag], flag


@pytest.mark.parametrize(("suffix", "value", "problem"), [
    ("CONVERSION_BLOCKING", "block", "must be one of off, monitor, enforce"),
    ("CONVERSION_MIN_SAMPLE", "3", "at least 5"),
    ("CONVERSION_MIN_SAMPLE", "ten", "whole number"),
    ("CONVERSION_BLOCK_FOR", "1m", "at least 5m"),
    ("CONVERSION_ALLOW", "GB,gbx", "'gbx' is neither an ISO country"),
    ("CONVERSION_MAX_BLOCKED_SHARE", "0", "1-100"),
])
def test_a_bad_conversion_rule_setting_names_its_own_flag(suffix: str, value: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load([], {**REQUIRED_ONLY, f"OTP_RELAY_{suffix}": value})
    assert str(refused.value).startswith(f"{config.OPTION[suffix].flag} / OTP_RELAY_{suffix}: ")
    assert problem in str(refused.value)


def test_the_conversion_rule_settings_reach_the_relay_together() -> None:
    loaded = config.load([], {**REQUIRED_ONLY, "OTP_RELAY_CONVERSION": "true", "OTP_RELAY_LOG_TOKEN_FILE": "/t",
                              "OTP_RELAY_CONVERSION_BLOCKING": "enforce", "OTP_RELAY_CONVERSION_ALLOW": "gb,+4477",
                              "OTP_RELAY_CONVERSION_MIN_SAMPLE": "20", "OTP_RELAY_CONVERSION_BLOCK_FOR": "2h",
                              "OTP_RELAY_CONVERSION_MAX_BLOCKED_SHARE": "10%"})
    rule = loaded.conversion_rule
    assert (rule.mode, rule.allow, rule.min_sample, rule.block_for, rule.max_blocked_share) == (
        "enforce", frozenset({"GB", "+4477"}), 20, 7200.0, 10)
