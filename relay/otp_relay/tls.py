"""The serving certificate, reloaded when its files change (cert-manager renews in place).

Loading a new chain into the same ``SSLContext`` applies to every handshake after it; open
connections keep the certificate they started with. A pair that does not load (a writer
mid-update, a key that does not match) keeps the previous one and is tried again on the next
change.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("otp_relay.tls")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ServingCertificate:
    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._stamps = (_stamp(cert_file), _stamp(key_file))
        self.context.load_cert_chain(cert_file, key_file)

    def refresh(self) -> bool:
        """Reload if either file changed; True when a new pair was loaded."""
        stamps = (_stamp(self.cert_file), _stamp(self.key_file))
        if stamps == self._stamps or None in stamps:
            return False
        self._stamps = stamps  # a half-written pair changes again when the writer finishes
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving certificate not reloaded", extra={"error": type(exc).__name__})
            return False
        log.info("serving certificate reloaded")
        return True
