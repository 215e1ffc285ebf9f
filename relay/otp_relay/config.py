"""Relay settings: command-line flags, each defaulting to its ``OTP_RELAY_*`` variable."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import phonenumbers

from . import policy, pumping
from .connections import MAX_READERS, MIN_BODY_RATE
from .durations import parse_duration

REGION_BASE_URLS = {
    "ap": "https://sms.8x8.com",
    "us": "https://sms.us.8x8.com",
    "eu": "https://sms.8x8.uk",
    "id": "https://sms.8x8.id",
}
# 8x8 serves Voice Messaging from voice.* beside sms.* in every region
VOICE_REGION_BASE_URLS = {region: url.replace("://sms.", "://voice.") for region, url in REGION_BASE_URLS.items()}
ENCODINGS = ("AUTO", "GSM7", "UCS2")
DEFAULT_VOICE_PROFILE = "en-US-Standard-A"  # a speech profile 8x8's documents name
DEFAULT_VOICE_REPETITION = 2  # an OTP is read twice
DEFAULT_VOICE_PER_RECIPIENT = "3/1h"  # calls to one number: stricter than texts (a call costs more)
VOICE_REPETITIONS = (1, 2, 3)  # what 8x8's say action takes
MAX_VOICE_PROFILES = 200  # entries of --voice-profiles
_VOICE_PROFILE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}-[A-Za-z0-9-]{1,64}$")  # 8x8's speech profile codes
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8}){0,3}$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")
_SUBACCOUNT = re.compile(r"^[A-Za-z0-9\-._&]{3,50}$")
DEFAULT_GLOBAL_LIMIT = "100/s"
DEFAULT_PER_RECIPIENT = "5/10m"
DEFAULT_RETENTION = "30m"
DEFAULT_DEADLINE = 6.0  # seconds
MIN_RETENTION = 15 * 60  # covers Auth0's retries of one message
MAX_IDEMPOTENCY_KEYS = 200_000  # live keys of the in-process store (~360 bytes each)
IN_FLIGHT_MARGIN = 1.0  # seconds a claimed key stays "in flight" beyond the deadline
DEFAULT_CONVERSION_FAILURE_AFTER = "10m"
MAX_CONVERSION_FAILURE_AFTER = 15 * 60  # 8x8 takes feedback within 15 minutes of the send
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and variable."""


@dataclass(frozen=True)
class Rate:
    """``limit`` events per ``window`` seconds."""

    limit: int
    window: float

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """Parse ``5/10m``, ``100/s``, ``20/1h30m``: a count, then a duration in the CRD's grammar
        (a bare unit means one of it)."""
        match = _RATE.match(text)
        try:
            if not match:
                raise ValueError(text)
            window = match[2]
            seconds = parse_duration(f"1{window}" if window in ("s", "m", "h") else window)
        except ValueError:
            raise ValueError(f"expected COUNT/DURATION like 5/10m, 100/s or 20/1h30m, got {text!r}") from None
        if int(match[1]) < 1:
            raise ValueError(f"the count must be positive, got {text!r}")
        return cls(limit=int(match[1]), window=float(seconds))


def _listen(text: str, suffix: str = "LISTEN") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise _fail(suffix, f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _count(suffix: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _fail(suffix, f"expected a positive whole number, got {text!r}")
    return int(text)


def _min_rate(text: str) -> float:
    if not text.isdigit():
        raise _fail("BODY_MIN_RATE", f"expected bytes per second (0 = no minimum), got {text!r}")
    return float(text)


def _flag(suffix: str, text: str) -> bool:
    if text.lower() not in _TRUE + _FALSE:
        raise _fail(suffix, f"expected true or false, got {text!r}")
    return text.lower() in _TRUE


def _retention(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise _fail("IDEMPOTENCY_RETENTION", str(exc)) from None
    if seconds < MIN_RETENTION:
        raise _fail("IDEMPOTENCY_RETENTION", f"must be at least 15m (Auth0 retries), got {text!r}")
    return float(seconds)


# query parameters of a state URL that would turn TLS verification off (redis-py honours them)
_UNVERIFIED = {"ssl_cert_reqs": {"none", "optional", "cert_none", "cert_optional"},
               "ssl_check_hostname": {"false", "0", "no", "off"}}


def _state_url(text: str) -> str | None:
    if text and not text.startswith(("redis://", "rediss://")):
        raise _fail("STATE_URL", "expected a redis:// or rediss:// URL")  # never echo: may hold a password
    for name, value in parse_qsl(urlsplit(text).query, keep_blank_values=True):
        if value.strip().lower() in _UNVERIFIED.get(name.lower(), ()):
            raise _fail("STATE_URL", f"{name}={value} would turn off the check of the store's TLS "
                        "certificate; it is always verified (trust: SSL_CERT_FILE or --state-ca-file)")
    return text or None


_NUMBER_TYPES = frozenset(name for name, value in vars(phonenumbers.PhoneNumberType).items()
                          if isinstance(value, int))


def _names(suffix: str, text: str, known: frozenset[str]) -> frozenset[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - known)
    if unknown:
        raise _fail(suffix, f"unknown name(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
    return frozenset(names)


def _calling_codes(text: str) -> frozenset[int]:
    codes = [c.strip().lstrip("+") for c in text.split(",") if c.strip()]
    bad = [c for c in codes if not c.isdigit() or "001" not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(c), ())]
    if bad:
        raise _fail("ALLOW_NON_GEOGRAPHIC", f"not non-geographic calling code(s): {', '.join(bad)} "
                    "(e.g. 800, 808, 870, 881, 882, 883, 979)")
    return frozenset(int(c) for c in codes)


def _duration(suffix: str, text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _fail(suffix, str(exc)) from None


def _canary_number(text: str) -> str | None:
    if not text:
        return None
    from .messages import invalid_number  # noqa: PLC0415  messages imports state, which imports this

    problem = invalid_number(text)
    if problem is not None:  # the number is not echoed: it is one of the operator's secrets
        raise _fail("CANARY_NUMBER", problem.replace("'recipient'", "the canary number"))
    return text


def normalise_locale(locale: str) -> str:
    """``en_US`` / ``EN-us`` -> ``en-us``: how locales are compared."""
    return locale.strip().replace("_", "-").lower()


def valid_locale(locale: object) -> bool:
    return isinstance(locale, str) and len(locale) <= 35 and bool(_LOCALE.match(locale))


def valid_voice_profile(code: object) -> bool:
    """An 8x8 speech profile code (``en-US-Standard-A``)."""
    return isinstance(code, str) and bool(_VOICE_PROFILE.match(code))


def _voice_profile(suffix: str, text: str) -> str:
    if not valid_voice_profile(text):
        raise _fail(suffix, f"expected an 8x8 speech profile code like en-US-Standard-A, got {text[:80]!r}")
    return text


def _voice_profiles(text: str) -> tuple[tuple[str, str], ...]:
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if len(pairs) > MAX_VOICE_PROFILES:
        raise _fail("VOICE_PROFILES", f"at most {MAX_VOICE_PROFILES} entries, got {len(pairs)}")
    table: dict[str, str] = {}
    for pair in pairs:
        locale, sep, profile = (part.strip() for part in pair.partition("="))
        if not sep or not valid_locale(locale):
            raise _fail("VOICE_PROFILES", f"expected LOCALE=PROFILE entries like en_GB=en-GB-Emma, got {pair[:80]!r}")
        table[normalise_locale(locale)] = _voice_profile("VOICE_PROFILES", profile)
    return tuple(table.items())


def _caller_id(text: str, enabled: bool) -> str | None:
    if not text:
        if enabled:
            raise _fail("VOICE_CALLER_ID", "required with --voice: the E.164 number 8x8 whitelisted "
                        "for the subaccount as the calls' caller ID")
        return None
    from .messages import invalid_number  # noqa: PLC0415  messages imports state, which imports this

    problem = invalid_number(text)
    if problem is not None:
        raise _fail("VOICE_CALLER_ID", problem.replace("'recipient'", "the caller ID"))
    return text


def _repetition(text: str) -> int:
    if not text.isdigit() or int(text) not in VOICE_REPETITIONS:
        raise _fail("VOICE_REPETITION", f"expected 1, 2 or 3 (what 8x8 takes), got {text[:20]!r}")
    return int(text)


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


def _sender(suffix: str, text: str) -> str | None:
    if len(text) > 16:
        raise _fail(suffix, f"at most 16 characters, got {len(text)}")
    return text or None


def _encoding(suffix: str, text: str) -> str:
    if text.upper() not in ENCODINGS:
        raise _fail(suffix, f"use one of {', '.join(ENCODINGS)}, got {text.upper()!r}")
    return text.upper()


def _path_prefix(suffix: str, text: str) -> str:
    prefix = text.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise _fail(suffix, f"must start with '/', got {prefix!r}")
    return prefix


def _log_level(suffix: str, text: str) -> str:
    if text.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise _fail(suffix, f"use DEBUG, INFO, WARNING or ERROR, got {text.upper()!r}")
    return text.upper()


def _receipt_url(suffix: str, text: str) -> str | None:
    url = text.rstrip("/")
    if url and not url.startswith(("https://", "http://")):
        raise _fail(suffix, f"expected an https:// URL, got {url!r}")
    return url or None


def _path(suffix: str, text: str) -> Path | None:
    return Path(text) if text else None


def _text(suffix: str, text: str) -> str:
    return text


def _failure_after(suffix: str, text: str) -> float:
    seconds = _duration(suffix, text)
    if not 0 < seconds < MAX_CONVERSION_FAILURE_AFTER:
        raise _fail(suffix, f"must be above 0 and under 15m (8x8 takes feedback within 15 minutes of "
                    f"the send), got {text!r}")
    return float(seconds)


def _conversion_rule(pick: Callable[[str], str]) -> pumping.RuleSettings:
    """The conversion rule's settings (``pumping.RuleSettings``), read together."""
    try:
        return pumping.parse_settings(pick("CONVERSION_BLOCKING"), pick("CONVERSION_ALLOW"),
                                      pick("CONVERSION_MIN_SAMPLE"), pick("CONVERSION_BLOCK_FOR"),
                                      pick("CONVERSION_MAX_BLOCKED_SHARE"))
    except pumping.SettingError as error:
        suffix = _RULE_OPTIONS.get(error.field, "CONVERSION_BLOCKING")
        raise _fail(suffix, str(error).replace(f"{OPTION[suffix].env}: ", "").replace(f"{OPTION[suffix].env} ", "")) from None


@dataclass(frozen=True)
class Option:
    """One setting, written once: its flag, its ``OTP_RELAY_<suffix>`` variable, its default
    (as a flag or variable would spell it; "" = not set), the ``Settings`` fields it fills and
    how (``parse(suffix, text)``; None: ``load`` reads it together with others), its help."""

    flag: str
    suffix: str
    help: str
    default: str = ""
    fields: tuple[str, ...] = ()
    parse: Callable[[str, str], Any] | None = None
    shown: str | None = None  # the default as --help says it, when not ``default``
    required: bool = False

    @property
    def env(self) -> str:
        return f"OTP_RELAY_{self.suffix}"

    def help_text(self) -> str:
        default = "required" if self.required else f"default {self.shown or self.default or 'none'}"
        return f"{self.help} ({default}) [env {self.env}]"


def _one(field: str, parse: Callable[[str, str], Any]) -> dict[str, Any]:
    return {"fields": (field,), "parse": parse}


# The one place a relay option is added: flag, variable, default, parser and help come from here.
OPTIONS: tuple[Option, ...] = (
    Option("--listen", "LISTEN", "HOST:PORT to serve /v1/messages on", "0.0.0.0:8080",
           ("host", "port"), lambda suffix, text: _listen(text, suffix)),
    Option("--admin-listen", "ADMIN_LISTEN", "HOST:PORT for /healthz, /readyz, /metrics", "0.0.0.0:9090",
           ("admin_host", "admin_port"), lambda suffix, text: _listen(text, suffix)),
    Option("--sms-region", "SMS_REGION", "8x8 region: ap, us, eu, id", "ap"),
    Option("--sms-base-url", "SMS_BASE_URL", "override the region's 8x8 base URL", fields=("base_url",),
           shown="the region's, e.g. https://sms.8x8.com"),
    Option("--subaccount", "SUBACCOUNT", "8x8 subaccount id", fields=("subaccount",), required=True),
    Option("--api-key-file", "API_KEY_FILE", "file holding the 8x8 API key (re-read on change)",
           fields=("api_key_file",), required=True),
    Option("--signing-key-file", "SIGNING_KEY_FILE", "file with signing keys, one per line (re-read on change)",
           fields=("signing_key_file",), required=True),
    Option("--sender", "SENDER", "sender id sent to 8x8 as 'source' (<= 16 chars)", **_one("sender", _sender)),
    Option("--encoding", "ENCODING", "AUTO, GSM7 or UCS2", "AUTO", **_one("encoding", _encoding)),
    Option("--allowed-countries", "ALLOWED_COUNTRIES", "comma list of ISO 3166 alpha-2 codes; empty = all",
           shown="all", **_one("allowed_countries", lambda suffix, text: _countries(text))),
    Option("--per-recipient", "PER_RECIPIENT", "per-recipient sliding window", DEFAULT_PER_RECIPIENT,
           **_one("per_recipient", _rate)),
    Option("--global-limit", "GLOBAL_LIMIT", "token bucket for the whole process", DEFAULT_GLOBAL_LIMIT,
           **_one("global_limit", _rate)),
    Option("--path-prefix", "PATH_PREFIX", "also serve under this path prefix, e.g. /prod",
           **_one("path_prefix", _path_prefix)),
    Option("--tls-cert-file", "TLS_CERT_FILE", "serve HTTPS with this certificate chain", shown="plain HTTP",
           **_one("tls_cert_file", _path)),
    Option("--tls-key-file", "TLS_KEY_FILE", "private key for --tls-cert-file", **_one("tls_key_file", _path)),
    Option("--key-reload-interval", "KEY_RELOAD_INTERVAL", "seconds between key-file checks", "1",
           **_one("key_reload_interval", _seconds)),
    Option("--shutdown-timeout", "SHUTDOWN_TIMEOUT", "seconds to finish in-flight requests on SIGTERM", "25",
           **_one("shutdown_timeout", _seconds)),
    Option("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR", "INFO", **_one("log_level", _log_level)),
    Option("--deadline", "DEADLINE", "seconds within which every send is answered", f"{DEFAULT_DEADLINE:g}",
           **_one("deadline", _seconds)),
    Option("--idempotency-retention", "IDEMPOTENCY_RETENTION", "how long a message's key is remembered, >= 15m",
           DEFAULT_RETENTION, **_one("idempotency_retention", lambda suffix, text: _retention(text))),
    Option("--state-url", "STATE_URL", "redis:// or rediss:// URL of the shared state", shown="in process",
           **_one("state_url", lambda suffix, text: _state_url(text))),
    Option("--state-password-file", "STATE_PASSWORD_FILE", "file holding the state store's password",
           **_one("state_password_file", _path)),
    Option("--state-ca-file", "STATE_CA_FILE", "CA bundle the rediss:// store's certificate is checked against",
           shown="SSL_CERT_FILE, else the system's", **_one("state_ca_file", _path)),
    Option("--state-prefix", "STATE_PREFIX", "key prefix in the state store", shown="otp-relay:<subaccount>",
           **_one("state_prefix", _text)),
    Option("--insecure-upstream", "INSECURE_UPSTREAM", "allow an http:// 8x8 base URL (test sandboxes only)",
           shown="false", **_one("insecure_upstream", _flag)),
    Option("--max-idempotency-keys", "MAX_IDEMPOTENCY_KEYS", "live keys the in-process store holds at most "
           "(~360 bytes each); the global limit over the retention must fit", str(MAX_IDEMPOTENCY_KEYS),
           **_one("max_idempotency_keys", _count)),
    Option("--max-connections", "MAX_CONNECTIONS", "open client connections at most", "1000",
           **_one("max_connections", _count)),
    Option("--max-in-flight", "MAX_IN_FLIGHT", "sends processed at once at most; more get 503", "256",
           **_one("max_in_flight", _count)),
    Option("--max-body-readers", "MAX_BODY_READERS", "connections reading a request body at once; a new "
           "one evicts the oldest", str(MAX_READERS), **_one("max_body_readers", _count)),
    Option("--body-min-rate", "BODY_MIN_RATE", "bytes/s a request body must keep up after its first second, "
           "else the connection gets 408 and is closed; 0 = no minimum", str(MIN_BODY_RATE),
           **_one("body_min_rate", lambda suffix, text: _min_rate(text))),
    Option("--header-timeout", "HEADER_TIMEOUT", "seconds to receive a request's headers", "5",
           **_one("header_timeout", _seconds)),
    Option("--body-timeout", "BODY_TIMEOUT", "seconds to receive a request's body", "5",
           **_one("body_timeout", _seconds)),
    Option("--idle-timeout", "IDLE_TIMEOUT", "seconds an idle keep-alive connection is kept", "75",
           **_one("idle_timeout", _seconds)),
    Option("--workers", "WORKERS", "processes sharing the public port (SO_REUSEPORT); more than 1 needs "
           "--state-url so limits and idempotency stay exact", "1", **_one("workers", _count)),
    Option("--allow-number-types", "ALLOW_NUMBER_TYPES", "number types that get a text besides MOBILE and "
           "FIXED_LINE_OR_MOBILE, e.g. VOIP,PERSONAL_NUMBER (libphonenumber's names)",
           **_one("allowed_number_types", lambda suffix, text: _names(suffix, text, _NUMBER_TYPES))),
    Option("--allow-non-geographic", "ALLOW_NON_GEOGRAPHIC", "non-geographic calling codes that get a text, "
           "e.g. 882", **_one("allowed_non_geographic", lambda suffix, text: _calling_codes(text))),
    Option("--max-segments", "MAX_SEGMENTS", "SMS segments a text may need at most",
           str(policy.DEFAULT_MAX_SEGMENTS), **_one("max_segments", _count)),
    Option("--per-prefix", "PER_PREFIX", "window per number prefix", policy.DEFAULT_PER_PREFIX,
           **_one("per_prefix", _rate)),
    Option("--prefix-digits", "PREFIX_DIGITS", "digits a prefix leaves out", str(policy.DEFAULT_PREFIX_DIGITS),
           **_one("prefix_digits", _count)),
    Option("--country-hour", "COUNTRY_HOUR", "SMS segments per destination country per hour-long window",
           policy.DEFAULT_COUNTRY_HOUR, **_one("country_hour", _rate)),
    Option("--country-day", "COUNTRY_DAY", "SMS segments per destination country per day-long window",
           policy.DEFAULT_COUNTRY_DAY, **_one("country_day", _rate)),
    Option("--per-client-ip", "PER_CLIENT_IP", "window per end-user IP (IPv6 per /64), e.g. 10/1h", shown="off",
           **_one("per_client_ip", lambda suffix, text: _rate(suffix, text) if text else None)),
    Option("--monitor-rules", "MONITOR_RULES", "rules that only count and log what they would refuse: "
           f"{', '.join(policy.RULES)}",
           **_one("monitor_rules", lambda suffix, text: _names(suffix, text, frozenset(policy.RULES)))),
    Option("--code-validity", "CODE_VALIDITY", "how long a code is valid: every send carries expiry = now + "
           "this, so a late SMS is never delivered", policy.DEFAULT_CODE_VALIDITY,
           **_one("code_validity", lambda suffix, text: float(_duration(suffix, text)))),
    Option("--receipt-url", "RECEIPT_URL", "public URL 8x8 posts delivery receipts to, without the token "
           "(e.g. https://otp.example.com/v1/receipts); sends carry <this>/<newest token>", shown="no receipts",
           **_one("receipt_url", _receipt_url)),
    Option("--receipt-token-file", "RECEIPT_TOKEN_FILE", "file with receipt tokens, one per line, newest last "
           "(re-read on change; every line is accepted)", **_one("receipt_token_file", _path)),
    Option("--canary-number", "CANARY_NUMBER", "E.164 test number of the live canary: its sends skip the "
           "users' limits and have their own cap of 12/h; its last attempt shows in /v1/delivery-summary",
           shown="no canary", **_one("canary_number", lambda suffix, text: _canary_number(text))),
    Option("--voice", "VOICE", "true: delivery_method 'voice' places a text-to-speech call through 8x8's Voice "
           "Messaging (callflows) API; false: voice requests get 422", shown="false",
           **_one("voice_enabled", _flag)),
    Option("--voice-base-url", "VOICE_BASE_URL", "override the region's 8x8 voice base URL",
           fields=("voice_base_url",), shown="the region's, e.g. https://voice.8x8.com"),
    Option("--voice-caller-id", "VOICE_CALLER_ID", "E.164 number calls come from: one 8x8 whitelisted for the "
           "subaccount (required with --voice)", fields=("voice_caller_id",)),
    Option("--voice-profile", "VOICE_PROFILE", "8x8 speech profile for locales without their own",
           DEFAULT_VOICE_PROFILE, **_one("voice_profile", _voice_profile)),
    Option("--voice-profiles", "VOICE_PROFILES", "per-locale speech profiles, e.g. "
           "en_GB=en-GB-Emma,fr=fr-FR-DeniseNeural (a locale's own, else its language's, else the default)",
           **_one("voice_profiles", lambda suffix, text: _voice_profiles(text))),
    Option("--voice-repetition", "VOICE_REPETITION", "times a call reads the message, 1-3",
           str(DEFAULT_VOICE_REPETITION), **_one("voice_repetition", lambda suffix, text: _repetition(text))),
    Option("--voice-per-recipient", "VOICE_PER_RECIPIENT", "per-recipient sliding window for calls, "
           "instead of --per-recipient", DEFAULT_VOICE_PER_RECIPIENT, **_one("voice_per_recipient", _rate)),
    Option("--conversion", "CONVERSION", "true: SMS sends carry track=Outcome, the Auth0 log stream sink "
           "learns which codes were used and 8x8 is told success/failure (needs --log-token-file)",
           shown="false", **_one("conversion", _flag)),
    Option("--log-token-file", "LOG_TOKEN_FILE", "file with the Auth0 log stream's bearer tokens, one per "
           "line, newest last (re-read on change; every line is accepted)", **_one("log_token_file", _path)),
    Option("--conversion-failure-after", "CONVERSION_FAILURE_AFTER", "age at which an unused code is "
           "reported failure to 8x8, under 15m", DEFAULT_CONVERSION_FAILURE_AFTER,
           **_one("conversion_failure_after", _failure_after)),
    Option("--conversion-blocking", "CONVERSION_BLOCKING", "the conversion rule against SMS pumping: off, "
           "monitor (count and log what it would block) or enforce (with the four below, read together)",
           pumping.RuleSettings.mode, fields=("conversion_rule",)),
    Option("--conversion-allow", "CONVERSION_ALLOW", "countries (GB) and E.164 prefixes (+4477) the "
           "conversion rule never blocks, comma separated", shown="none"),
    Option("--conversion-min-sample", "CONVERSION_MIN_SAMPLE", "matured sends a prefix or country needs "
           "before the rule may block it", str(pumping.RuleSettings.min_sample)),
    Option("--conversion-block-for", "CONVERSION_BLOCK_FOR", "the first block; it doubles on each repeat "
           "(up to 24h)", "1h"),
    Option("--conversion-max-blocked-share", "CONVERSION_MAX_BLOCKED_SHARE", "percent of the last hour's "
           "converting sends that blocked keys may hold", str(pumping.RuleSettings.max_blocked_share)),
)
_RULE_OPTIONS = {  # the RuleSettings fields these options set (the others keep pumping's defaults)
    "mode": "CONVERSION_BLOCKING", "allow": "CONVERSION_ALLOW", "min_sample": "CONVERSION_MIN_SAMPLE",
    "block_for": "CONVERSION_BLOCK_FOR", "max_blocked_share": "CONVERSION_MAX_BLOCKED_SHARE",
}
OPTION = {option.suffix: option for option in OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otp-relay",
        description="Forward HMAC-signed OTP requests from Auth0 to the 8x8 SMS API.",
        epilog="Every flag defaults to its OTP_RELAY_* environment variable.",
    )
    for option in OPTIONS:
        parser.add_argument(option.flag, dest=option.suffix.lower(), default=None, help=option.help_text())
    return parser


def _pick(args: argparse.Namespace, env: dict[str, str], suffix: str) -> str:
    value = getattr(args, suffix.lower())
    if value is None:
        value = env.get(OPTION[suffix].env, OPTION[suffix].default)
    return value.strip()


def _fail(suffix: str, problem: str) -> ConfigError:
    return ConfigError(f"{OPTION[suffix].flag} / {OPTION[suffix].env}: {problem}")


def _default(suffix: str) -> Any:
    """The value an option has when neither its flag nor its variable is set."""
    option = OPTION[suffix]
    assert option.parse is not None, suffix
    return option.parse(suffix, option.default)


@dataclass(frozen=True)
class Settings:
    """What ``load`` reads; every default is its option's (``OPTIONS``)."""

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
    key_reload_interval: float = _default("KEY_RELOAD_INTERVAL")
    shutdown_timeout: float = _default("SHUTDOWN_TIMEOUT")
    log_level: str = _default("LOG_LEVEL")
    admin_host: str = _default("ADMIN_LISTEN")[0]
    admin_port: int = _default("ADMIN_LISTEN")[1]
    deadline: float = _default("DEADLINE")
    idempotency_retention: float = _default("IDEMPOTENCY_RETENTION")
    state_url: str | None = _default("STATE_URL")
    state_password_file: Path | None = _default("STATE_PASSWORD_FILE")
    state_ca_file: Path | None = _default("STATE_CA_FILE")
    state_prefix: str = _default("STATE_PREFIX")  # load(): otp-relay:<subaccount>
    insecure_upstream: bool = _default("INSECURE_UPSTREAM")
    max_connections: int = _default("MAX_CONNECTIONS")
    max_in_flight: int = _default("MAX_IN_FLIGHT")
    max_body_readers: int = _default("MAX_BODY_READERS")
    body_min_rate: float = _default("BODY_MIN_RATE")
    header_timeout: float = _default("HEADER_TIMEOUT")
    body_timeout: float = _default("BODY_TIMEOUT")
    idle_timeout: float = _default("IDLE_TIMEOUT")
    workers: int = _default("WORKERS")
    receipt_url: str | None = _default("RECEIPT_URL")
    receipt_token_file: Path | None = _default("RECEIPT_TOKEN_FILE")
    max_idempotency_keys: int = _default("MAX_IDEMPOTENCY_KEYS")
    allowed_number_types: frozenset[str] = _default("ALLOW_NUMBER_TYPES")
    allowed_non_geographic: frozenset[int] = _default("ALLOW_NON_GEOGRAPHIC")
    max_segments: int = _default("MAX_SEGMENTS")
    per_prefix: Rate = _default("PER_PREFIX")
    prefix_digits: int = _default("PREFIX_DIGITS")
    country_hour: Rate = _default("COUNTRY_HOUR")
    country_day: Rate = _default("COUNTRY_DAY")
    per_client_ip: Rate | None = _default("PER_CLIENT_IP")
    monitor_rules: frozenset[str] = _default("MONITOR_RULES")
    code_validity: float = _default("CODE_VALIDITY")
    canary_number: str | None = _default("CANARY_NUMBER")
    voice_enabled: bool = _default("VOICE")
    voice_base_url: str = VOICE_REGION_BASE_URLS[OPTION["SMS_REGION"].default]  # the region's
    voice_caller_id: str | None = None  # required with --voice
    voice_profile: str = _default("VOICE_PROFILE")
    voice_profiles: tuple[tuple[str, str], ...] = _default("VOICE_PROFILES")  # (normalised locale, profile)
    voice_repetition: int = _default("VOICE_REPETITION")
    voice_per_recipient: Rate = _default("VOICE_PER_RECIPIENT")
    conversion: bool = _default("CONVERSION")
    log_token_file: Path | None = _default("LOG_TOKEN_FILE")
    conversion_failure_after: float = _default("CONVERSION_FAILURE_AFTER")
    conversion_rule: pumping.RuleSettings = pumping.RuleSettings()

    def voice_profile_for(self, locale: str | None) -> str:
        """The speech profile for Auth0's ``locale`` (``en_US``, ``fr-FR``, ``de``): the exact
        locale's, else its language's, else the default."""
        if locale:
            wanted = normalise_locale(locale)
            table = dict(self.voice_profiles)
            for candidate in (wanted, wanted.split("-")[0]):
                if candidate in table:
                    return table[candidate]
        return self.voice_profile

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``env`` (defaults: the process's), or ConfigError."""
    env = dict(os.environ if env is None else env)
    args = build_parser().parse_args(argv)
    pick = lambda suffix: _pick(args, env, suffix)  # noqa: E731

    values: dict[str, Any] = {}
    for option in OPTIONS:  # every option read on its own, in the table's order
        if option.parse is not None:
            parsed = option.parse(option.suffix, pick(option.suffix))
            values.update(zip(option.fields, parsed) if len(option.fields) > 1 else {option.fields[0]: parsed})
    region = pick("SMS_REGION").lower()
    if region not in REGION_BASE_URLS:
        raise _fail("SMS_REGION", f"unknown region {region!r}; use one of {', '.join(REGION_BASE_URLS)}")
    insecure = values["insecure_upstream"]
    for suffix, field, urls in (("SMS_BASE_URL", "base_url", REGION_BASE_URLS),
                                ("VOICE_BASE_URL", "voice_base_url", VOICE_REGION_BASE_URLS)):
        url = values[field] = (pick(suffix) or urls[region]).rstrip("/")
        if not url.startswith(("https://", "http://") if insecure else ("https://",)):
            raise _fail(suffix, f"expected an https:// URL, got {url!r}"
                        + ("" if insecure else " (http:// only with --insecure-upstream)"))
    subaccount = values["subaccount"] = pick("SUBACCOUNT")
    if not _SUBACCOUNT.match(subaccount):
        raise _fail("SUBACCOUNT", "required; 3-50 characters of A-Z a-z 0-9 - . _ &")
    for suffix in ("API_KEY_FILE", "SIGNING_KEY_FILE"):
        if not pick(suffix):
            raise _fail(suffix, "required")
        values[OPTION[suffix].fields[0]] = Path(pick(suffix))
    if bool(values["tls_cert_file"]) != bool(values["tls_key_file"]):
        raise _fail("TLS_CERT_FILE", "set both the TLS certificate and key files, or neither")
    if values["workers"] > 1 and not values["state_url"]:
        raise _fail("WORKERS", "more than one worker needs --state-url: limits and idempotency "
                    "must stay exact across the pod's processes, never workers x the budget")
    if values["receipt_url"] and not values["receipt_token_file"]:
        raise _fail("RECEIPT_TOKEN_FILE", "required with --receipt-url (the token goes in the path)")
    if values["conversion"] and not values["log_token_file"]:
        raise _fail("LOG_TOKEN_FILE", "required with --conversion (the Auth0 log stream's bearer tokens)")
    if values["log_token_file"] and not values["conversion"]:
        raise _fail("CONVERSION", "--log-token-file is set but conversion tracking is off: set "
                    "--conversion true, or drop the token file")
    values["conversion_rule"] = _conversion_rule(pick)
    values["state_prefix"] = values["state_prefix"] or f"otp-relay:{subaccount}"
    values["voice_caller_id"] = _caller_id(pick("VOICE_CALLER_ID"), values["voice_enabled"])
    settings = Settings(**values)
    if not settings.state_url:
        needed = keys_needed(settings.global_limit, settings.idempotency_retention, settings.deadline)
        if needed > settings.max_idempotency_keys:
            raise _fail("GLOBAL_LIMIT", f"{settings.global_limit.limit}/{settings.global_limit.window:g}s "
                        f"admits up to {needed:,} messages within the idempotency retention "
                        f"({settings.idempotency_retention:g}s + {settings.deadline + IN_FLIGHT_MARGIN:g}s "
                        f"in flight), more than the in-process store's {settings.max_idempotency_keys:,} "
                        "keys (--max-idempotency-keys): lower the limit or the retention, raise the "
                        "store, or use --state-url")
    return settings


def keys_needed(rate: Rate, retention: float = parse_duration(DEFAULT_RETENTION),
                deadline: float = DEFAULT_DEADLINE) -> int:
    """Keys the in-process store may have to hold at once under the global limit ``rate``: a
    full bucket (its burst) plus its refill over the time a key lives (the retention after its
    last change, which can come up to the in-flight time after its claim). The operator asks
    the same for a channel without a state store."""
    lifetime = retention + deadline + IN_FLIGHT_MARGIN
    return rate.limit + math.ceil(rate.limit / rate.window * lifetime)
