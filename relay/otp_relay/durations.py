"""The one duration grammar of the project: ``1h30m``, ``10m``, ``45s`` (hours, minutes, seconds,
in that order, each optional, at least one present).

The OtpChannel CRD validates windows with ``DURATION_PATTERN`` (a test asserts the CRD carries
exactly this pattern) and the relay and the operator parse them with ``parse_duration``, so a
window the API server accepts is a window the relay runs with.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = (3600, 60, 1)


def parse_duration(text: str) -> int:
    """Whole seconds of ``text``; ValueError when it is not a positive duration."""
    match = _DURATION.fullmatch(text)
    if not text or not match:
        raise ValueError(f"expected a duration like 30s, 10m or 1h30m, got {text!r}")
    seconds = sum(int(part[:-1]) * unit for part, unit in zip(match.groups(), _UNIT_SECONDS) if part)
    if seconds < 1:
        raise ValueError(f"the duration must be at least 1s, got {text!r}")
    return seconds
