"""The per-channel token 8x8's delivery receipts carry in their URL path, and its rotation.

Receipts are not signed: the unguessable token in ``<publicUrl>/v1/receipts/<token>`` is what
tells the relay a receipt comes from the message's sender. The relay accepts every line of
the token Secret and puts the newest (last) line on new sends, so a rotation keeps the
previous token for receipts still on their way; the relay accepts it for 48 h after it sees it
superseded (8x8 retries for up to 48 h), so one rotation revokes a leaked token and loses no
receipt (rotate at most once in 48 h).

Rotate by setting the channel annotation ``otprelay.io/rotate-receipt-token`` to a new value;
the Secret records the request it answered (key ``rotation``), so each value rotates once. Pure: the caller
reads the Secret.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _random
from collections.abc import Callable, Mapping
from typing import Any

from . import names

TOKEN_BYTES = 32
KEPT = 2  # the current token and the previous one


def new_token() -> str:
    return _random.token_urlsafe(TOKEN_BYTES)


def _text(data: Mapping[str, Any], key: str) -> str:
    try:
        return base64.b64decode(data.get(key) or "", validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""


def current(secret: Mapping[str, Any] | None) -> tuple[list[str], str]:
    """(tokens oldest first, rotation request handled) of the operator's Secret."""
    data = (secret or {}).get("data") or {}
    tokens = [line.strip() for line in _text(data, names.RECEIPT_TOKEN_SECRET_KEY).splitlines() if line.strip()]
    return tokens, _text(data, names.RECEIPT_ROTATION_SECRET_KEY)


def plan(secret: Mapping[str, Any] | None, requested: str | None,
         generate: Callable[[], str] = new_token) -> tuple[tuple[str, ...], str]:
    """The Secret's next content: (tokens oldest first, rotation request handled)."""
    tokens, handled = current(secret)
    requested = requested or ""
    if not tokens:
        return (generate(),), requested
    if requested != handled:
        return (tokens[-1], generate()), requested
    return tuple(tokens[-KEPT:]), handled
