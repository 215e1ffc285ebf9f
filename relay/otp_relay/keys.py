"""Key files re-read when they change, without a restart or a dropped request.

A poll compares (inode, size, mtime) — which also follows Kubernetes' ``..data`` symlink swap
of mounted Secrets — and swaps in the new value atomically; requests always see a complete key
set. Content is parsed strictly: blank lines and ``#`` comments are ignored; an empty
signing-key file revokes every key; an API key file with more than one key is refused. Either
makes the relay not ready. A file that vanishes keeps the previous value (writers replace files
atomically, as the kubelet does, so a missing file is a transient state).
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


def key_lines(text: str) -> list[str]:
    """Non-blank lines that are not ``#`` comments, without surrounding whitespace (so a
    trailing CR is not part of a key)."""
    return [line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def parse_api_key(text: str) -> str:
    keys = key_lines(text)
    if len(keys) != 1:
        raise ValueError(f"expected exactly one API key, found {len(keys)}")
    return keys[0]


def parse_signing_keys(text: str) -> list[str]:
    """Every key line is accepted (rotation); none at all revokes every key."""
    return key_lines(text)


@dataclass(frozen=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


class WatchedFile(Generic[T]):
    """The parsed content of ``path``; ``refresh()`` re-reads it if it changed."""

    def __init__(self, name: str, path: Path, parse: Callable[[str], T],
                 on_reload: Callable[[str, bool], None] = lambda name, ok: None) -> None:
        self.name = name
        self.path = path
        self._parse = parse
        self._on_reload = on_reload
        self._stamp: _Stamp | None = None
        self.value: T | None = None
        self.problem: str | None = "not loaded yet"

    def refresh(self) -> bool:
        """Re-read if the file changed; True when a new value was loaded."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self.value is None:
                self.problem = f"file unreadable: {exc.strerror}"
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
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("key file unreadable, keeping the previous value",
                        extra={"key_file": self.name, "error": type(exc).__name__})
            self._stamp = None  # look again on the next poll
            self._on_reload(self.name, False)
            return False
        try:
            value: T | None = self._parse(text)
            self.problem = None if value else "no key in the file"
        except ValueError as exc:
            value, self.problem = None, str(exc)
        if self.problem:
            log.warning("key file refused", extra={"key_file": self.name, "error": self.problem})
            self._on_reload(self.name, False)
        changed = value != self.value
        self.value = value
        if changed and value:
            log.info("key file loaded", extra={"key_file": self.name})
            self._on_reload(self.name, True)
        return changed
