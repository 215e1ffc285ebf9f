"""Secrets of rotating bearer tokens the operator generates for the relay, and their rotation.

Two use this layout (``RotatingTokens``): the token 8x8's delivery receipts carry in their URL
path (``RECEIPT``), and the bearer token Auth0's log stream sends (``LOG_STREAM``, with
spec.conversion). The relay accepts every line of the Secret and the newest (last) line is the
one handed out, so a rotation keeps the previous token for what is still on its way.

Receipts are not signed: the unguessable token in ``<publicUrl>/v1/receipts/<token>`` is what
tells the relay a receipt comes from the message's sender. The relay accepts a superseded
receipt token for 48 h after it sees it superseded (8x8 retries for up to 48 h), so one rotation
revokes a leaked token and loses no receipt (rotate at most once in 48 h).

Rotate by setting the channel's annotation (``otprelay.io/rotate-receipt-token``,
``otprelay.io/rotate-log-stream-token``) to a new value; the Secret records the request it
answered (key ``rotation``), so each value rotates once. Pure: the caller reads the Secret.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RotatingTokens:
    """Where one kind of token lives: its Secret's data keys and the annotation that rotates it."""

    token_key: str
    rotation_key: str
    annotation: str

    def current(self, secret: Mapping[str, Any] | None) -> tuple[list[str], str]:
        """(tokens oldest first, rotation request handled) of the operator's Secret."""
        data = (secret or {}).get("data") or {}
        tokens = [line.strip() for line in _text(data, self.token_key).splitlines() if line.strip()]
        return tokens, _text(data, self.rotation_key)

    def plan(self, secret: Mapping[str, Any] | None, requested: str | None,
             generate: Callable[[], str] = new_token) -> tuple[tuple[str, ...], str]:
        """The Secret's next content: (tokens oldest first, rotation request handled)."""
        tokens, handled = self.current(secret)
        requested = requested or ""
        if not tokens:
            return (generate(),), requested
        if requested != handled:
            return (tokens[-1], generate()), requested
        return tuple(tokens[-KEPT:]), handled

    def requested(self, annotations: Mapping[str, str] | None) -> str | None:
        return (annotations or {}).get(self.annotation)


RECEIPT = RotatingTokens(names.RECEIPT_TOKEN_SECRET_KEY, names.RECEIPT_ROTATION_SECRET_KEY,
                         names.ANNOTATION_ROTATE_RECEIPT_TOKEN)
LOG_STREAM = RotatingTokens(names.LOG_TOKEN_SECRET_KEY, names.LOG_ROTATION_SECRET_KEY,
                            names.ANNOTATION_ROTATE_LOG_STREAM_TOKEN)
# The receipt tokens' functions, as callers have always used them.
current = RECEIPT.current
plan = RECEIPT.plan
