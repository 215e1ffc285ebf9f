"""Relay settings: command-line flags, each defaulting to its ``OTP_RELAY_*`` variable."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import phonenumbers

from . import policy
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
    admin_host: str = "0.0.0.0"
    admin_port: int = 9090
    deadline: float = DEFAULT_DEADLINE
    idempotency_retention: float = 1800.0
    state_url: str | None = None
    state_password_file: Path | None = None
    state_ca_file: Path | None = None
    state_prefix: str = ""
    insecure_upstream: bool = False
    max_connections: int = 1000
    max_in_flight: int = 256
    max_body_readers: int = MAX_READERS
    body_min_rate: float = MIN_BODY_RATE
    header_timeout: float = 5.0
    body_timeout: float = 5.0
    idle_timeout: float = 75.0
    workers: int = 1
    receipt_url: str | None = None
    receipt_token_file: Path | None = None
    max_idempotency_keys: int = MAX_IDEMPOTENCY_KEYS
    allowed_number_types: frozenset[str] = frozenset()
    allowed_non_geographic: frozenset[int] = frozenset()
    max_segments: int = policy.DEFAULT_MAX_SEGMENTS
    per_prefix: Rate = Rate.parse(policy.DEFAULT_PER_PREFIX)
    prefix_digits: int = policy.DEFAULT_PREFIX_DIGITS
    country_hour: Rate = Rate.parse(policy.DEFAULT_COUNTRY_HOUR)
    country_day: Rate = Rate.parse(policy.DEFAULT_COUNTRY_DAY)
    per_client_ip: Rate | None = None
    monitor_rules: frozenset[str] = frozenset()
    code_validity: float = float(parse_duration(policy.DEFAULT_CODE_VALIDITY))
    canary_number: str | None = None
    voice_enabled: bool = False
    voice_base_url: str = VOICE_REGION_BASE_URLS["ap"]
    voice_caller_id: str | None = None
    voice_profile: str = DEFAULT_VOICE_PROFILE
    voice_profiles: tuple[tuple[str, str], ...] = ()  # (normalised locale, profile)
    voice_repetition: int = DEFAULT_VOICE_REPETITION
    voice_per_recipient: Rate = Rate.parse(DEFAULT_VOICE_PER_RECIPIENT)
    # conversion tracking (issue 26, ``conversion``)
    conversion: bool = False
    log_token_file: Path | None = None
    conversion_failure_after: float = float(parse_duration(DEFAULT_CONVERSION_FAILURE_AFTER))

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


# (flag, env suffix, help); env var is OTP_RELAY_<suffix>
_OPTIONS: list[tuple[str, str, str]] = [
    ("--listen", "LISTEN", "HOST:PORT to serve /v1/messages on (default 0.0.0.0:8080)"),
    ("--admin-listen", "ADMIN_LISTEN", "HOST:PORT for /healthz, /readyz, /metrics (default 0.0.0.0:9090)"),
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
    ("--deadline", "DEADLINE", "seconds within which every send is answered (default 6)"),
    ("--idempotency-retention", "IDEMPOTENCY_RETENTION",
     f"how long a message's key is remembered, >= 15m (default {DEFAULT_RETENTION})"),
    ("--state-url", "STATE_URL", "redis:// or rediss:// URL of the shared state (default: in process)"),
    ("--state-password-file", "STATE_PASSWORD_FILE", "file holding the state store's password"),
    ("--state-ca-file", "STATE_CA_FILE", "CA bundle the rediss:// store's certificate is checked against "
     "(default: SSL_CERT_FILE, else the system's)"),
    ("--state-prefix", "STATE_PREFIX", "key prefix in the state store (default otp-relay:<subaccount>)"),
    ("--insecure-upstream", "INSECURE_UPSTREAM", "allow an http:// 8x8 base URL (test sandboxes only)"),
    ("--max-idempotency-keys", "MAX_IDEMPOTENCY_KEYS", "live keys the in-process store holds at most "
     f"(~360 bytes each); the global limit over the retention must fit (default {MAX_IDEMPOTENCY_KEYS})"),
    ("--max-connections", "MAX_CONNECTIONS", "open client connections at most (default 1000)"),
    ("--max-in-flight", "MAX_IN_FLIGHT", "sends processed at once at most; more get 503 (default 256)"),
    ("--max-body-readers", "MAX_BODY_READERS", "connections reading a request body at once; a new "
     f"one evicts the oldest (default {MAX_READERS})"),
    ("--body-min-rate", "BODY_MIN_RATE", "bytes/s a request body must keep up after its first second, "
     f"else the connection gets 408 and is closed; 0 = no minimum (default {MIN_BODY_RATE})"),
    ("--header-timeout", "HEADER_TIMEOUT", "seconds to receive a request's headers (default 5)"),
    ("--body-timeout", "BODY_TIMEOUT", "seconds to receive a request's body (default 5)"),
    ("--idle-timeout", "IDLE_TIMEOUT", "seconds an idle keep-alive connection is kept (default 75)"),
    ("--workers", "WORKERS", "processes sharing the public port (SO_REUSEPORT); more than 1 needs "
     "--state-url so limits and idempotency stay exact (default 1)"),
    ("--allow-number-types", "ALLOW_NUMBER_TYPES", "number types that get a text besides MOBILE and "
     "FIXED_LINE_OR_MOBILE, e.g. VOIP,PERSONAL_NUMBER (libphonenumber's names)"),
    ("--allow-non-geographic", "ALLOW_NON_GEOGRAPHIC", "non-geographic calling codes that get a text, "
     "e.g. 882 (default: none)"),
    ("--max-segments", "MAX_SEGMENTS", f"SMS segments a text may need at most (default {policy.DEFAULT_MAX_SEGMENTS})"),
    ("--per-prefix", "PER_PREFIX", f"window per number prefix (default {policy.DEFAULT_PER_PREFIX})"),
    ("--prefix-digits", "PREFIX_DIGITS", f"digits a prefix leaves out (default {policy.DEFAULT_PREFIX_DIGITS})"),
    ("--country-hour", "COUNTRY_HOUR", f"SMS segments per destination country per hour-long window "
     f"(default {policy.DEFAULT_COUNTRY_HOUR})"),
    ("--country-day", "COUNTRY_DAY", f"SMS segments per destination country per day-long window "
     f"(default {policy.DEFAULT_COUNTRY_DAY})"),
    ("--per-client-ip", "PER_CLIENT_IP", "window per end-user IP (IPv6 per /64), e.g. 10/1h (default: off)"),
    ("--monitor-rules", "MONITOR_RULES", f"rules that only count and log what they would refuse: "
     f"{', '.join(policy.RULES)}"),
    ("--code-validity", "CODE_VALIDITY", f"how long a code is valid: every send carries expiry = now + "
     f"this, so a late SMS is never delivered (default {policy.DEFAULT_CODE_VALIDITY})"),
    ("--receipt-url", "RECEIPT_URL", "public URL 8x8 posts delivery receipts to, without the token "
     "(e.g. https://otp.example.com/v1/receipts); sends carry <this>/<newest token>"),
    ("--receipt-token-file", "RECEIPT_TOKEN_FILE", "file with receipt tokens, one per line, newest last "
     "(re-read on change; every line is accepted)"),
    ("--canary-number", "CANARY_NUMBER", "E.164 test number of the live canary: its sends skip the "
     "users' limits and have their own cap of 12/h; its last attempt shows in /v1/delivery-summary "
     "(default: no canary)"),
    ("--voice", "VOICE", "true: delivery_method 'voice' places a text-to-speech call through 8x8's Voice "
     "Messaging (callflows) API; false (default): voice requests get 422"),
    ("--voice-base-url", "VOICE_BASE_URL", "override the region's 8x8 voice base URL (default: the "
     "region's, e.g. https://voice.8x8.com)"),
    ("--voice-caller-id", "VOICE_CALLER_ID", "E.164 number calls come from: one 8x8 whitelisted for the "
     "subaccount (required with --voice)"),
    ("--voice-profile", "VOICE_PROFILE", f"8x8 speech profile for locales without their own "
     f"(default {DEFAULT_VOICE_PROFILE})"),
    ("--voice-profiles", "VOICE_PROFILES", "per-locale speech profiles, e.g. "
     "en_GB=en-GB-Emma,fr=fr-FR-DeniseNeural (a locale's own, else its language's, else the default)"),
    ("--voice-repetition", "VOICE_REPETITION", f"times a call reads the message, 1-3 (default "
     f"{DEFAULT_VOICE_REPETITION})"),
    ("--voice-per-recipient", "VOICE_PER_RECIPIENT", f"per-recipient sliding window for calls, "
     f"instead of --per-recipient (default {DEFAULT_VOICE_PER_RECIPIENT})"),
    ("--conversion", "CONVERSION", "true: SMS sends carry track=Outcome, the Auth0 log stream sink "
     "learns which codes were used and 8x8 is told success/failure (needs --log-token-file; "
     "default false)"),
    ("--log-token-file", "LOG_TOKEN_FILE", "file with the Auth0 log stream's bearer tokens, one per "
     "line, newest last (re-read on change; every line is accepted)"),
    ("--conversion-failure-after", "CONVERSION_FAILURE_AFTER", "age at which an unused code is "
     f"reported failure to 8x8, under 15m (default {DEFAULT_CONVERSION_FAILURE_AFTER})"),
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


def _conversion(pick: Callable[..., str]) -> tuple[bool, Path | None, float]:
    """--conversion, --log-token-file (required together), --conversion-failure-after."""
    enabled = _flag("CONVERSION", pick("CONVERSION"))
    token_file = pick("LOG_TOKEN_FILE")
    if enabled and not token_file:
        raise _fail("LOG_TOKEN_FILE", "required with --conversion (the Auth0 log stream's bearer tokens)")
    if token_file and not enabled:
        raise _fail("CONVERSION", "--log-token-file is set but conversion tracking is off: set "
                    "--conversion true, or drop the token file")
    text = pick("CONVERSION_FAILURE_AFTER", DEFAULT_CONVERSION_FAILURE_AFTER)
    seconds = _duration("CONVERSION_FAILURE_AFTER", text)
    if not 0 < seconds < MAX_CONVERSION_FAILURE_AFTER:
        raise _fail("CONVERSION_FAILURE_AFTER", f"must be above 0 and under 15m (8x8 takes feedback "
                    f"within 15 minutes of the send), got {text!r}")
    return enabled, Path(token_file) if token_file else None, float(seconds)


def load(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``env`` (defaults: the process's), or ConfigError."""
    env = dict(os.environ if env is None else env)
    args = build_parser().parse_args(argv)
    pick = lambda suffix, default="": _pick(args, env, suffix, default)  # noqa: E731

    host, port = _listen(pick("LISTEN", "0.0.0.0:8080"))
    admin_host, admin_port = _listen(pick("ADMIN_LISTEN", "0.0.0.0:9090"), "ADMIN_LISTEN")
    region = pick("SMS_REGION", "ap").lower()
    if region not in REGION_BASE_URLS:
        raise _fail("SMS_REGION", f"unknown region {region!r}; use one of {', '.join(REGION_BASE_URLS)}")
    base_url = (pick("SMS_BASE_URL") or REGION_BASE_URLS[region]).rstrip("/")
    insecure = _flag("INSECURE_UPSTREAM", pick("INSECURE_UPSTREAM"))
    if not base_url.startswith(("https://", "http://") if insecure else ("https://",)):
        raise _fail("SMS_BASE_URL", f"expected an https:// URL, got {base_url!r}"
                    + ("" if insecure else " (http:// only with --insecure-upstream)"))
    voice_base_url = (pick("VOICE_BASE_URL") or VOICE_REGION_BASE_URLS[region]).rstrip("/")
    if not voice_base_url.startswith(("https://", "http://") if insecure else ("https://",)):
        raise _fail("VOICE_BASE_URL", f"expected an https:// URL, got {voice_base_url!r}"
                    + ("" if insecure else " (http:// only with --insecure-upstream)"))
    voice_enabled = _flag("VOICE", pick("VOICE"))
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
    password_file = pick("STATE_PASSWORD_FILE")
    workers = _count("WORKERS", pick("WORKERS", "1"))
    if workers > 1 and not pick("STATE_URL"):
        raise _fail("WORKERS", "more than one worker needs --state-url: limits and idempotency "
                    "must stay exact across the pod's processes, never workers x the budget")
    receipt_url, receipt_token_file = pick("RECEIPT_URL").rstrip("/"), pick("RECEIPT_TOKEN_FILE")
    if receipt_url and not receipt_url.startswith(("https://", "http://")):
        raise _fail("RECEIPT_URL", f"expected an https:// URL, got {receipt_url!r}")
    if receipt_url and not receipt_token_file:
        raise _fail("RECEIPT_TOKEN_FILE", "required with --receipt-url (the token goes in the path)")
    conversion, log_token_file, failure_after = _conversion(pick)
    log_level = pick("LOG_LEVEL", "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise _fail("LOG_LEVEL", f"use DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
    settings = Settings(
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
        admin_host=admin_host, admin_port=admin_port,
        deadline=_seconds("DEADLINE", pick("DEADLINE", f"{DEFAULT_DEADLINE:g}")),
        idempotency_retention=_retention(pick("IDEMPOTENCY_RETENTION", DEFAULT_RETENTION)),
        state_url=_state_url(pick("STATE_URL")),
        state_password_file=Path(password_file) if password_file else None,
        state_ca_file=Path(pick("STATE_CA_FILE")) if pick("STATE_CA_FILE") else None,
        state_prefix=pick("STATE_PREFIX") or f"otp-relay:{subaccount}",
        insecure_upstream=insecure,
        max_connections=_count("MAX_CONNECTIONS", pick("MAX_CONNECTIONS", "1000")),
        max_in_flight=_count("MAX_IN_FLIGHT", pick("MAX_IN_FLIGHT", "256")),
        max_body_readers=_count("MAX_BODY_READERS", pick("MAX_BODY_READERS", str(MAX_READERS))),
        body_min_rate=_min_rate(pick("BODY_MIN_RATE", str(MIN_BODY_RATE))),
        header_timeout=_seconds("HEADER_TIMEOUT", pick("HEADER_TIMEOUT", "5")),
        body_timeout=_seconds("BODY_TIMEOUT", pick("BODY_TIMEOUT", "5")),
        idle_timeout=_seconds("IDLE_TIMEOUT", pick("IDLE_TIMEOUT", "75")),
        workers=workers,
        receipt_url=receipt_url or None,
        receipt_token_file=Path(receipt_token_file) if receipt_token_file else None,
        max_idempotency_keys=_count("MAX_IDEMPOTENCY_KEYS", pick("MAX_IDEMPOTENCY_KEYS", str(MAX_IDEMPOTENCY_KEYS))),
        allowed_number_types=_names("ALLOW_NUMBER_TYPES", pick("ALLOW_NUMBER_TYPES"), _NUMBER_TYPES),
        allowed_non_geographic=_calling_codes(pick("ALLOW_NON_GEOGRAPHIC")),
        max_segments=_count("MAX_SEGMENTS", pick("MAX_SEGMENTS", str(policy.DEFAULT_MAX_SEGMENTS))),
        per_prefix=_rate("PER_PREFIX", pick("PER_PREFIX", policy.DEFAULT_PER_PREFIX)),
        prefix_digits=_count("PREFIX_DIGITS", pick("PREFIX_DIGITS", str(policy.DEFAULT_PREFIX_DIGITS))),
        country_hour=_rate("COUNTRY_HOUR", pick("COUNTRY_HOUR", policy.DEFAULT_COUNTRY_HOUR)),
        country_day=_rate("COUNTRY_DAY", pick("COUNTRY_DAY", policy.DEFAULT_COUNTRY_DAY)),
        per_client_ip=_rate("PER_CLIENT_IP", pick("PER_CLIENT_IP")) if pick("PER_CLIENT_IP") else None,
        monitor_rules=_names("MONITOR_RULES", pick("MONITOR_RULES"), frozenset(policy.RULES)),
        code_validity=float(_duration("CODE_VALIDITY", pick("CODE_VALIDITY", policy.DEFAULT_CODE_VALIDITY))),
        canary_number=_canary_number(pick("CANARY_NUMBER")),
        voice_enabled=voice_enabled,
        voice_base_url=voice_base_url,
        voice_caller_id=_caller_id(pick("VOICE_CALLER_ID"), voice_enabled),
        voice_profile=_voice_profile("VOICE_PROFILE", pick("VOICE_PROFILE", DEFAULT_VOICE_PROFILE)),
        voice_profiles=_voice_profiles(pick("VOICE_PROFILES")),
        voice_repetition=_repetition(pick("VOICE_REPETITION", str(DEFAULT_VOICE_REPETITION))),
        voice_per_recipient=_rate("VOICE_PER_RECIPIENT", pick("VOICE_PER_RECIPIENT", DEFAULT_VOICE_PER_RECIPIENT)),
        conversion=conversion, log_token_file=log_token_file, conversion_failure_after=failure_after,
    )
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
