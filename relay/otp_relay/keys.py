"""Key files re-read when they change, without a restart or a dropped request.

A poll compares (inode, size, mtime) — which also follows Kubernetes' symlink swap of mounted
Secrets — and swaps in the new value atomically; requests always see a complete key set. A
file that vanishes or reads empty mid-update keeps the previous value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("otp_relay.keys")


def parse_api_key(text: str) -> str | None:
    key = text.strip()
    return key or None


def parse_signing_keys(text: str) -> list[str] | None:
    """One key per line, every line accepted, blank lines ignored (surrounding whitespace and
    a trailing CR are not part of a key)."""
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    return keys or None


@dataclass(frozen=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


class WatchedFile(Generic[T]):
    """The parsed content of ``path``; ``refresh()`` re-reads it if it changed."""

    def __init__(self, name: str, path: Path, parse: Callable[[str], T | None],
                 on_reload: Callable[[str, bool], None] = lambda name, ok: None) -> None:
        self.name = name
        self.path = path
        self._parse = parse
        self._on_reload = on_reload
        self._stamp: _Stamp | None = None
        self.value: T | None = None

    def refresh(self) -> bool:
        """Re-read if the file changed; True when a new value was loaded."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stamp is not None or self.value is None:
                log.warning("key file unreadable, keeping the previous value",
                            extra={"key_file": self.name, "error": exc.strerror})
            self._stamp = None
            return False
        stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            value = self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            value = None
            log.warning("key file unreadable, keeping the previous value",
                        extra={"key_file": self.name, "error": type(exc).__name__})
        if value is None:
            # An empty read can be a writer mid-update: look again on the next poll.
            self._stamp = None
            self._on_reload(self.name, False)
            return False
        changed = value != self.value
        self.value = value
        if changed:
            log.info("key file loaded", extra={"key_file": self.name})
            self._on_reload(self.name, True)
        return changed
