"""The subaccount's Voice Session Summary (VSS) webhook, kept pointing at this relay.

8x8 takes one VSS webhook per subaccount (its Webhooks API: ``GET``/``POST``
``/api/v1/subaccounts/{id}/webhooks``), and call outcomes reach the relay only through it, at
``<receipt URL>/<token>``. With ``--voice``, a receipt URL and a receipt token, the relay looks
at it in the background at start, whenever the newest receipt token changes, and every
``RECHECK`` seconds:

- no VSS webhook, or one under ``<receipt URL>/`` with another token (this relay's, before a
  rotation): the relay ``POST``s ``<receipt URL>/<newest token>`` (8x8 creates or replaces);
- already ``<receipt URL>/<newest token>`` (and enabled): nothing is written;
- anything else (another channel sharing the subaccount, the user's own system): never
  overwritten; logged once (its scheme and host only) and reported ``foreign``.

Errors (401/403/5xx, timeouts, unreadable answers) are retried with bounded backoff and never
stop the relay; sends and readiness never wait for any of this. The requests go through the
voice sends' client (``upstream.EightByEight``: base URL, API key, no redirects, bounded time).
Every replica does the same with the same newest token, so they converge on one URL.

The state (``STATES``) is the gauge ``otp_relay_voice_webhook{state}`` and the delivery
summary's ``voiceWebhook``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

OURS, FOREIGN, MISSING, ERROR, OFF = "ours", "foreign", "missing", "error", "off"
STATES = (OURS, FOREIGN, MISSING, ERROR, OFF)
STALE = "stale"  # this relay's URL with an older token: replaced
RECHECK = 15 * 60.0  # seconds between looks when nothing changed
BACKOFF_BASE, BACKOFF_MAX = 1.0, 60.0  # seconds: retries after an error
REQUEST_TIMEOUT = 5.0  # seconds, one request
log = logging.getLogger("otp_relay.webhook")


def classify(hooks: Any, receipt_url: str, token: str) -> str:
    """What 8x8's list answer (``{"webhooks": [{"type", "url", "enabled"}...]}``) says of the
    subaccount's VSS webhook: OURS, STALE (ours, another token), FOREIGN or MISSING."""
    items = hooks.get("webhooks") if isinstance(hooks, dict) else None
    if not isinstance(items, list):
        raise ValueError("8x8's webhook list has no 'webhooks' array")
    vss = next((h for h in items if isinstance(h, dict) and h.get("type") == "VSS"), None)
    if vss is None:
        return MISSING
    url = vss.get("url")
    if not isinstance(url, str):
        return FOREIGN
    if url == f"{receipt_url}/{token}":
        return OURS if vss.get("enabled", True) is not False else STALE
    rest = url[len(receipt_url) + 1:] if url.startswith(receipt_url + "/") else ""
    if rest and not any(c in rest for c in "/?#"):
        return STALE
    return FOREIGN


def request_body(receipt_url: str, token: str) -> dict[str, object]:
    """8x8's WebhookRequest that points the VSS webhook at ``<receipt URL>/<token>`` (no
    ``httpAuthHeader``: the token in the path authenticates, as for SMS receipts)."""
    return {"type": "VSS", "url": f"{receipt_url}/{token}", "enabled": True}


def shown(url: object) -> str:
    """A webhook URL as logs show it: scheme and host only (a path may hold a token)."""
    try:
        parts = urlsplit(str(url))
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"[:200]
    except ValueError:
        return "(not a URL)"


class VoiceWebhook:
    """The registrar: ``run()`` in the background, ``changed()`` after each token-file check."""

    def __init__(self, client: Any, receipt_url: str | None, newest_token: Callable[[], str | None],
                 api_key: Callable[[], str | None], report: Callable[[str], None],
                 backoff_base: float = BACKOFF_BASE, backoff_max: float = BACKOFF_MAX,
                 recheck: float = RECHECK) -> None:
        self._client, self._url = client, receipt_url
        self._newest, self._api_key, self._report = newest_token, api_key, report
        self._base, self._max, self._recheck = backoff_base, backoff_max, recheck
        self._wake = asyncio.Event()
        self._looked: str | None = None  # the token of the last look (successful or not)
        self._foreign_logged: str | None = None
        self._failing = False
        self.state = MISSING if client is not None and receipt_url else OFF
        report(self.state)

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._report(state)

    def changed(self) -> None:
        """Wake the loop when the newest token is not the one last looked for (a failed look is
        retried on its backoff, not on every token-file check)."""
        if self._newest() != self._looked:
            self._wake.set()

    async def run(self) -> None:
        if self.state == OFF:
            return
        failures = 0
        while True:
            self._wake.clear()  # a rotation during the look below wakes the next wait
            token, key = self._newest(), self._api_key()
            wait = self._recheck
            if token and key:
                self._looked = token
                try:
                    self._set(await self._sync(key, token))
                    failures = 0
                    if self._failing:
                        self._failing = False
                        log.info("8x8's webhooks API answers again")
                except Exception as exc:  # noqa: BLE001  never let the registrar die
                    failures = min(failures + 1, 32)
                    self._set(ERROR)
                    if not self._failing:
                        self._failing = True
                        log.warning("cannot check the subaccount's VSS webhook; retrying",
                                    extra={"error": _reason(exc)})
                    wait = min(self._max, self._base * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
            elif not token:
                self._set(MISSING)  # nothing to register yet
            else:
                wait = min(wait, 1.0)  # the API key is not loaded yet
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _sync(self, key: str, token: str) -> str:
        assert self._url is not None
        status, body = await self._client.call("GET", "webhooks", key, timeout=REQUEST_TIMEOUT)
        if status != 200:
            raise _Refused(status)
        found = classify(orjson.loads(body), self._url, token)
        if found == OURS:
            return OURS
        if found == FOREIGN:
            vss = next(h for h in orjson.loads(body)["webhooks"] if isinstance(h, dict) and h.get("type") == "VSS")
            where = shown(vss.get("url"))
            if where != self._foreign_logged:
                self._foreign_logged = where
                log.warning("the subaccount's VSS webhook points elsewhere; left as it is (call "
                            "outcomes will not reach this relay)", extra={"webhook": where})
            return FOREIGN
        self._foreign_logged = None
        status, _ = await self._client.call("POST", "webhooks", key, timeout=REQUEST_TIMEOUT,
                                            payload=request_body(self._url, token))
        if not 200 <= status < 300:
            raise _Refused(status)
        log.info("the subaccount's VSS webhook now points at this relay",
                 extra={"previous": "none" if found == MISSING else "an older receipt token"})
        return OURS


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"8x8 answered {status}")
        self.status = status


def _reason(exc: Exception) -> str:
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return "unreadable answer"
    return type(exc).__name__
