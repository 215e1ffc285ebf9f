"""Watch events decoded by orjson instead of the standard json module.

kopf decodes every watch event with ``json.loads`` (its ``_cogs.clients.api`` module): at 100
channels that was a tenth of the operator's CPU, the largest single cost after Auth0's requests.
orjson (already a dependency) reads the same JSON several times faster. What orjson refuses (an
integer beyond 64 bits, say) goes to the standard module, so no event that kopf could read before
is lost. ``install`` checks that kopf still decodes through that module attribute; a kopf that
changed shape keeps its own decoding (tests/operator/test_watch_json.py fails then).
"""

from __future__ import annotations

import json
import logging
import types
from typing import Any

import orjson

log = logging.getLogger(__name__)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def install() -> bool:
    """Point kopf's watch decoding at ``loads``; whether it could."""
    from kopf._cogs.clients import api  # noqa: PLC0415 - kopf's internals, checked below

    if getattr(api, "json", None) is not json:
        log.warning("kopf no longer decodes watch events through json.loads; keeping its own decoding")
        return False
    patched = types.ModuleType("json")
    patched.__dict__.update(json.__dict__)
    patched.loads = loads  # type: ignore[attr-defined]
    api.json = patched
    return True
