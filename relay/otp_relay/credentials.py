"""What the relay serves with and reloads while it runs: the 8x8 API key, the signing keys, the
TLS certificate and the receipt tokens (each a mounted file, re-read every
``--key-reload-interval``; a bad or missing file keeps the last good value and says why)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from . import signing
from .config import Settings
from .keys import WatchedFile, parse_api_key, parse_signing_keys
from .receipts import ReceiptTokens
from .tls import ServingCertificate

log = logging.getLogger("otp_relay.request")


class Credentials:
    def __init__(self, settings: Settings, on_reload: Callable[[str, bool], None]) -> None:
        self.api_key = WatchedFile("api_key", settings.api_key_file, parse_api_key, on_reload)
        self.signing_keys = WatchedFile("signing_key", settings.signing_key_file, parse_signing_keys, on_reload)
        self.certificate = (ServingCertificate(settings.tls_cert_file, settings.tls_key_file)
                            if settings.tls_cert_file and settings.tls_key_file else None)
        self.receipt_tokens = (ReceiptTokens(WatchedFile("receipt_token", settings.receipt_token_file,
                                                         parse_signing_keys, on_reload))
                               if settings.receipt_token_file else None)
        self._primed: tuple = ()
        self._primed_from: list[str] | None = None

    def refresh(self) -> None:
        self.api_key.refresh()
        self.signing_keys.refresh()
        if self.receipt_tokens is not None:
            self.receipt_tokens.refresh()
        if self.certificate is not None:
            self.certificate.refresh()

    @property
    def loaded(self) -> bool:
        """What readiness needs of them: an API key and at least one signing key."""
        return bool(self.api_key.value and self.signing_keys.value)

    def not_loaded(self) -> dict[str, object]:
        """``/readyz``'s account of what is missing and why."""
        files = (self.api_key, self.signing_keys)
        return {"missing": [f.name for f in files if not f.value],
                "reasons": {f.name: f.problem for f in files if f.problem}}

    def verifier_keys(self) -> tuple:
        """The signing keys prepared for ``signing.verify`` (again only when the file changed)."""
        current = self.signing_keys.value
        if current is not self._primed_from:
            self._primed = signing.prime(current or [])
            self._primed_from = current
        return self._primed

    @property
    def newest_receipt_token(self) -> str | None:
        return self.receipt_tokens.newest if self.receipt_tokens is not None else None


async def reload_loop(interval: float, refresh: Callable[[], Awaitable[None]]) -> None:
    """``refresh`` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh()
        except Exception:  # never let the watcher die: keep the last good keys
            log.exception("refresh failed")
