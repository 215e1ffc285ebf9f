"""Relay settings: command-line flags, each defaulting to its ``OTP_RELAY_*`` variable."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import phonenumbers

REGION_BASE_URLS = {
    "ap": "https://sms.8x8.com",
    "us": "https://sms.us.8x8.com",
    "eu": "https://sms.8x8.uk",
    "id": "https://sms.8x8.id",
}
ENCODINGS = ("AUTO", "GSM7", "UCS2")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")
_SUBACCOUNT = re.compile(r"^[A-Za-z0-9\-._&]{3,50}$")
DEFAULT_GLOBAL_LIMIT = "100/s"
DEFAULT_PER_RECIPIENT = "5/10m"


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and variable."""


@dataclass(frozen=True)
class Rate:
    """``limit`` events per ``window`` seconds."""

    limit: int
    window: float

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """Parse ``5/10m``, ``100/s``, ``20/1h``."""
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"expected COUNT/[N]UNIT with unit s, m or h (e.g. 5/10m), got {text!r}")
        count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
        if count < 1 or multiple < 1:
            raise ValueError(f"count and window must be positive, got {text!r}")
        return cls(limit=count, window=multiple * _UNITS[unit])


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    base_url: str
    subaccount: str
    api_key_file: Path
    signing_key_file: Path
    sender: str | None
    encoding: str
    allowed_countries: frozenset[str]
    per_recipient: Rate
    global_limit: Rate
    path_prefix: str
    tls_cert_file: Path | None
    tls_key_file: Path | None
    key_reload_interval: float = 1.0
    shutdown_timeout: float = 25.0
    log_level: str = "INFO"

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"


# (flag, env suffix, help); env var is OTP_RELAY_<suffix>
_OPTIONS: list[tuple[str, str, str]] = [
    ("--listen", "LISTEN", "HOST:PORT to serve on (default 0.0.0.0:8080)"),
    ("--sms-region", "SMS_REGION", "8x8 region: ap (default), us, eu, id"),
    ("--sms-base-url", "SMS_BASE_URL", "override the region's 8x8 base URL"),
    ("--subaccount", "SUBACCOUNT", "8x8 subaccount id (required)"),
    ("--api-key-file", "API_KEY_FILE", "file holding the 8x8 API key (re-read on change)"),
    ("--signing-key-file", "SIGNING_KEY_FILE", "file with signing keys, one per line (re-read on change)"),
    ("--sender", "SENDER", "sender id sent to 8x8 as 'source' (<= 16 chars)"),
    ("--encoding", "ENCODING", "AUTO (default), GSM7 or UCS2"),
    ("--allowed-countries", "ALLOWED_COUNTRIES", "comma list of ISO 3166 alpha-2 codes; empty = all"),
    ("--per-recipient", "PER_RECIPIENT", f"per-recipient sliding window (default {DEFAULT_PER_RECIPIENT})"),
    ("--global-limit", "GLOBAL_LIMIT", f"token bucket for the whole process (default {DEFAULT_GLOBAL_LIMIT})"),
    ("--path-prefix", "PATH_PREFIX", "also serve under this path prefix, e.g. /prod"),
    ("--tls-cert-file", "TLS_CERT_FILE", "serve HTTPS with this certificate chain"),
    ("--tls-key-file", "TLS_KEY_FILE", "private key for --tls-cert-file"),
    ("--key-reload-interval", "KEY_RELOAD_INTERVAL", "seconds between key-file checks (default 1)"),
    ("--shutdown-timeout", "SHUTDOWN_TIMEOUT", "seconds to finish in-flight requests on SIGTERM (default 25)"),
    ("--log-level", "LOG_LEVEL", "DEBUG, INFO (default), WARNING, ERROR"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otp-relay",
        description="Forward HMAC-signed OTP requests from Auth0 to the 8x8 SMS API.",
        epilog="Every flag defaults to its OTP_RELAY_* environment variable.",
    )
    for flag, suffix, help_text in _OPTIONS:
        parser.add_argument(flag, dest=suffix.lower(), default=None,
                            help=f"{help_text} [env OTP_RELAY_{suffix}]")
    return parser


def _pick(args: argparse.Namespace, env: dict[str, str], suffix: str, default: str = "") -> str:
    value = getattr(args, suffix.lower())
    if value is None:
        value = env.get(f"OTP_RELAY_{suffix}", default)
    return value.strip()


def _fail(suffix: str, problem: str) -> ConfigError:
    flag = next(f for f, s, _ in _OPTIONS if s == suffix)
    return ConfigError(f"{flag} / OTP_RELAY_{suffix}: {problem}")


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise _fail("LISTEN", f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _countries(text: str) -> frozenset[str]:
    known = phonenumbers.SUPPORTED_REGIONS
    codes = [c.strip().upper() for c in text.split(",") if c.strip()]
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise _fail("ALLOWED_COUNTRIES", f"unknown ISO 3166 alpha-2 code(s): {', '.join(unknown)}")
    return frozenset(codes)


def _rate(suffix: str, text: str) -> Rate:
    try:
        return Rate.parse(text)
    except ValueError as exc:
        raise _fail(suffix, str(exc)) from None


def _seconds(suffix: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise _fail(suffix, f"expected a positive number of seconds, got {text!r}")
    return value


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``env`` (defaults: the process's), or ConfigError."""
    env = dict(os.environ if env is None else env)
    args = build_parser().parse_args(argv)
    pick = lambda suffix, default="": _pick(args, env, suffix, default)  # noqa: E731

    host, port = _listen(pick("LISTEN", "0.0.0.0:8080"))
    region = pick("SMS_REGION", "ap").lower()
    if region not in REGION_BASE_URLS:
        raise _fail("SMS_REGION", f"unknown region {region!r}; use one of {', '.join(REGION_BASE_URLS)}")
    base_url = (pick("SMS_BASE_URL") or REGION_BASE_URLS[region]).rstrip("/")
    if not base_url.startswith(("https://", "http://")):
        raise _fail("SMS_BASE_URL", f"expected an http(s) URL, got {base_url!r}")
    subaccount = pick("SUBACCOUNT")
    if not _SUBACCOUNT.match(subaccount):
        raise _fail("SUBACCOUNT", "required; 3-50 characters of A-Z a-z 0-9 - . _ &")
    api_key_file, signing_key_file = pick("API_KEY_FILE"), pick("SIGNING_KEY_FILE")
    if not api_key_file:
        raise _fail("API_KEY_FILE", "required")
    if not signing_key_file:
        raise _fail("SIGNING_KEY_FILE", "required")
    sender = pick("SENDER") or None
    if sender is not None and len(sender) > 16:
        raise _fail("SENDER", f"at most 16 characters, got {len(sender)}")
    encoding = pick("ENCODING", "AUTO").upper()
    if encoding not in ENCODINGS:
        raise _fail("ENCODING", f"use one of {', '.join(ENCODINGS)}, got {encoding!r}")
    prefix = pick("PATH_PREFIX").rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise _fail("PATH_PREFIX", f"must start with '/', got {prefix!r}")
    cert, key = pick("TLS_CERT_FILE"), pick("TLS_KEY_FILE")
    if bool(cert) != bool(key):
        raise _fail("TLS_CERT_FILE", "set both the TLS certificate and key files, or neither")
    log_level = pick("LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise _fail("LOG_LEVEL", f"use DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    return Settings(
        host=host, port=port, base_url=base_url, subaccount=subaccount,
        api_key_file=Path(api_key_file), signing_key_file=Path(signing_key_file),
        sender=sender, encoding=encoding,
        allowed_countries=_countries(pick("ALLOWED_COUNTRIES")),
        per_recipient=_rate("PER_RECIPIENT", pick("PER_RECIPIENT", DEFAULT_PER_RECIPIENT)),
        global_limit=_rate("GLOBAL_LIMIT", pick("GLOBAL_LIMIT", DEFAULT_GLOBAL_LIMIT)),
        path_prefix=prefix,
        tls_cert_file=Path(cert) if cert else None, tls_key_file=Path(key) if key else None,
        key_reload_interval=_seconds("KEY_RELOAD_INTERVAL", pick("KEY_RELOAD_INTERVAL", "1")),
        shutdown_timeout=_seconds("SHUTDOWN_TIMEOUT", pick("SHUTDOWN_TIMEOUT", "25")),
        log_level=log_level,
    )
