"""Lifting conversion blocks by hand: the annotation ``otprelay.io/lift-conversion-block:
"<key>[,<key>...]"`` (a country "GB" or a number prefix "+4477") on a channel.

The delivery timer processes each value of the annotation once: one signed
``POST /v1/conversion/lift`` per key to the relay, an Event per key, and the value with the
outcomes in ``status.conversionLift``. A GitOps tool that leaves the annotation in place does
not lift again; setting another value (any change, even the order of the keys) does. A value
with an invalid key sends nothing. Deciding is pure (``pending``, ``outcome``, ``record``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_KEYS = 20
MAX_VALUE = 1024
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
PREFIX = re.compile(r"^\+[1-9][0-9]{0,14}$")  # a number prefix the relay blocks (status shows them too)
LIFTED, NOT_BLOCKED, FAILED = "lifted", "not-blocked", "failed"


@dataclass(frozen=True)
class Lift:
    marker: str  # what status.conversionLift.annotation records as processed
    keys: tuple[str, ...]
    problem: str | None = None  # set: nothing is sent


def _marker(value: str) -> str:
    return value if len(value) <= MAX_VALUE else "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def pending(annotation: Any, previous: Mapping[str, Any] | None) -> Lift | None:
    """The lift the annotation asks for now, or None (no annotation, an empty one, or a value
    processed already)."""
    if not isinstance(annotation, str) or not annotation.strip():
        return None
    value = annotation.strip()
    marker = _marker(value)
    if (previous or {}).get("annotation") == marker:
        return None
    if len(value) > MAX_VALUE:
        return Lift(marker, (), f"the annotation is longer than {MAX_VALUE} characters: nothing lifted")
    keys: list[str] = []
    invalid: list[str] = []
    for part in value.split(","):
        key = part.strip()
        if not key:
            continue
        if _COUNTRY.match(key):
            key = key.upper()
        elif not PREFIX.match(key):
            invalid.append(key[:20])
            continue
        if key not in keys:
            keys.append(key)
    if invalid:
        return Lift(marker, (), "not a country (ISO 3166 code such as GB) or a number prefix (+ and digits, "
                                f"such as +4477): {', '.join(repr(k) for k in invalid[:5])}; nothing lifted")
    if not keys:
        return None
    if len(keys) > MAX_KEYS:
        return Lift(marker, (), f"at most {MAX_KEYS} keys at a time, got {len(keys)}: nothing lifted")
    return Lift(marker, tuple(keys))


def outcome(status_code: int | None, answer: Any, error: str | None = None) -> tuple[str, str | None]:
    """(outcome, detail) of one lift request: the relay's ``{"lifted": bool}`` on 200, else why."""
    if error is not None:
        return FAILED, error
    if status_code == 200 and isinstance(answer, dict) and isinstance(answer.get("lifted"), bool):
        return (LIFTED, None) if answer["lifted"] else (NOT_BLOCKED, None)
    if status_code == 200:
        return FAILED, "the relay's answer has no lifted field"
    return FAILED, f"relay answered HTTP {status_code}"


def record(lift: Lift, results: list[dict[str, Any]], stamp: str) -> dict[str, Any]:
    """``status.conversionLift`` once ``lift`` was processed."""
    done: dict[str, Any] = {"annotation": lift.marker, "time": stamp, "results": results}
    if lift.problem is not None:
        done["message"] = lift.problem
    else:
        failed = [r["key"] for r in results if r["outcome"] == FAILED]
        done["message"] = (f"lifting failed for {', '.join(failed)}: set the annotation again (any new value) to retry"
                           if failed else "processed")
    return done


def event(key: str, result: str, detail: str | None) -> tuple[bool, str, str]:
    """(warning, reason, message) of the Event for one key."""
    if result == LIFTED:
        return False, "ConversionBlockLifted", f"the conversion block on {key} was lifted"
    if result == NOT_BLOCKED:
        return False, "ConversionBlockNotFound", f"no active conversion block on {key}: nothing to lift"
    return True, "ConversionBlockLiftFailed", f"lifting the conversion block on {key} failed: {detail}"
