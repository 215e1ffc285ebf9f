"""A typed, validated view of an OtpChannel (defaults re-applied in case the CRD lacks them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from otp_relay import config as relay_config, pumping
from otp_relay.durations import parse_duration

from . import names

INTEGRATIONS = ("phone-provider", "send-phone-message", "legacy-hook")
# spec.auth0.flows (the same as otp_operator.auth0.model.FLOWS, which this pure module does not
# import: tests/auth0/test_passwordless.py keeps them and the CRD equal).
AUTH0_FLOWS = ("mfa", "passwordless")
REGIONS = ("ap", "us", "eu", "id")
ENCODINGS = ("AUTO", "GSM7", "UCS2")
DELETION_POLICIES = ("Delete", "Orphan")
REDIS_DEFAULT_PORT = 6379
CANARY_DEFAULT_EVERY = "6h"
# Auth0's test message has a fixed text and no code, so its idempotency key is the same at every
# try: within the relay's idempotency retention (30m) a second try is a replay (no SMS). The
# CRD's CEL rule has the same minimum.
CANARY_MIN_EVERY = "30m"
# spec.conversion (the CRD has the same defaults and bounds; tests/operator/test_conversion.py
# keeps them equal). 8x8 takes conversion feedback for 15 minutes after a send, so an unused code
# must be reported failed before then.
CONVERSION_DEFAULT_FAILURE_AFTER = "10m"
CONVERSION_FEEDBACK_WINDOW = "15m"
CONVERSION_MODES = pumping.MODES  # the relay's conversion rule decides what a mode is
CONVERSION_DEFAULT_MODE = "monitor"
CONVERSION_MAX_ALLOW = 100
CONVERSION_MIN_SAMPLE = 5
CONVERSION_MIN_BLOCK_FOR = "5m"
_ALLOW_ENTRY = re.compile(r"^(?:[A-Z]{2}|\+[0-9]{1,8})$")


class SpecError(ValueError):
    """The channel's spec cannot be acted on; the message names the field."""

    reason = "InvalidSpec"


@dataclass(frozen=True)
class ConfigMapKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str

    def describe(self) -> str:
        return f"Secret {self.name!r} key {self.key!r}"


@dataclass(frozen=True)
class Auth0Spec:
    domain: str
    credentials_secret: str
    client_id_key: str
    client_secret_key: str
    integration: str
    name: str
    replace_foreign_provider: bool
    replace_foreign_action: bool = False
    manage_routing: bool = False
    flows: tuple[str, ...] = AUTH0_FLOWS

    @property
    def client_id_ref(self) -> SecretKeyRef:
        return SecretKeyRef(self.credentials_secret, self.client_id_key)

    @property
    def client_secret_ref(self) -> SecretKeyRef:
        return SecretKeyRef(self.credentials_secret, self.client_secret_key)


@dataclass(frozen=True)
class SmsSpec:
    subaccount_id: str
    api_key: SecretKeyRef
    region: str
    base_url: str
    sender: str
    encoding: str


@dataclass(frozen=True)
class PolicySpec:
    allowed_countries: tuple[str, ...]
    per_recipient_limit: int
    per_recipient_window: str
    global_limit: int = 100
    global_window: str = "1s"
    delivery_ratio_threshold: float | None = None
    # SMS-pumping rules: None / empty = the relay's own default (relay/README.md)
    per_prefix: str | None = None  # "LIMIT/WINDOW", as the relay's flags take them
    country_hourly: str | None = None
    country_daily: str | None = None
    per_client_ip: str | None = None
    max_segments: int | None = None
    code_validity: str | None = None
    allow_number_types: tuple[str, ...] = ()
    allow_non_geographic: tuple[int, ...] = ()
    monitor_rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateStoreSpec:
    """A Redis the relays share (idempotency keys, limits); the password from a Secret."""

    url: str
    password: SecretKeyRef | None
    ca: ConfigMapKeyRef | None = None  # the PEM bundle the store's certificate is checked against

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or REDIS_DEFAULT_PORT

    @property
    def host_port(self) -> str:
        """What the operator's state-store allow-list matches (the port always written out)."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IngressSpec:
    host: str
    class_name: str
    tls_secret_name: str
    annotations: Mapping[str, str] = field(default_factory=dict)  # e.g. AWS ALB, cert-manager


@dataclass(frozen=True)
class RelaySpec:
    replicas: int
    public_url: str
    ingress: IngressSpec | None
    resources: Mapping[str, Any] = field(default_factory=dict)
    state_store: StateStoreSpec | None = None
    pod_template: Mapping[str, Any] = field(default_factory=dict)  # spec.relay.podTemplate, as written

    @property
    def path_prefix(self) -> str:
        """The path of the public URL without a trailing slash ('' for the root)."""
        return urlsplit(self.public_url).path.rstrip("/")


@dataclass(frozen=True)
class CanarySpec:
    """spec.canary: a test number Auth0 sends a test message to every ``every_seconds``."""

    to: str  # E.164; shown only masked (``masked``)
    every: str
    every_seconds: int

    @property
    def masked(self) -> str:
        return "***" + self.to[-4:]


@dataclass(frozen=True)
class VoiceSpec:
    """spec.voice: MFA codes read out in a call through 8x8's Voice Messaging API."""

    caller_id: str  # E.164, a number 8x8 has whitelisted for the subaccount
    profile: str  # 8x8 speech profile for locales without their own
    profiles: tuple[tuple[str, str], ...]  # (Auth0 locale, speech profile)
    repetition: int  # how often the text is read in one call
    per_recipient_limit: int
    per_recipient_window: str
    offer: bool  # manageRouting adds voice to the tenant's MFA message types


@dataclass(frozen=True)
class ConversionSpec:
    """spec.conversion: learn from Auth0's log stream which codes were used (and tell 8x8), and
    optionally block number prefixes whose codes go unused. None of the optional fields: the
    relay's own default."""

    failure_after: str
    mode: str
    allow: tuple[str, ...] = ()
    min_sample: int | None = None
    block_for: str | None = None
    max_blocked_share_percent: int | None = None


@dataclass(frozen=True)
class ChannelSpec:
    namespace: str
    name: str
    auth0: Auth0Spec
    sms: SmsSpec
    policy: PolicySpec
    relay: RelaySpec
    suspend: bool
    deletion_policy: str = "Delete"  # Orphan: deleting the channel leaves the Auth0 side as it is
    canary: CanarySpec | None = None
    voice: VoiceSpec | None = None  # None: no calls (spec.voice absent or enabled: false)
    conversion: ConversionSpec | None = None  # None: spec.conversion absent or enabled: false

    @property
    def owner(self) -> str:
        return names.owner_of(self.namespace, self.name)

    def referenced_secrets(self) -> frozenset[str]:
        """The user's Secrets the operator reads. Not the state store's password: only the relay
        pods mount it; the operator reads only its metadata (the opt-in label, see
        ``secrets.check_state_password``)."""
        return frozenset({self.auth0.credentials_secret, self.sms.api_key.name})


def _flows(value: Any) -> tuple[str, ...]:
    if value is None:
        return AUTH0_FLOWS
    if not isinstance(value, list) or not value or any(f not in AUTH0_FLOWS for f in value):
        raise SpecError(f"spec.auth0.flows must be a non-empty list of {', '.join(AUTH0_FLOWS)}, not {value!r}")
    return tuple(dict.fromkeys(value))


def _get(mapping: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if mapping is None:
        return default
    value = mapping.get(key)
    return default if value is None else value


def _require(value: Any, path: str) -> Any:
    if value in (None, ""):
        raise SpecError(f"spec.{path} is required")
    return value


def _one_of(value: str, allowed: tuple[str, ...], path: str) -> str:
    if value not in allowed:
        raise SpecError(f"spec.{path} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def window_seconds(window: str, path: str = "spec.policy.perRecipient.window") -> int:
    """The relay parses the same grammar (one place: ``otp_relay.durations``)."""
    try:
        return parse_duration(window)
    except ValueError:
        raise SpecError(f"{path} {window!r} is not a duration like 10m or 1h30m") from None


def _ratio(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SpecError(f"spec.policy.deliveryRatioThreshold must be a number from 0 to 1, not {value!r}")
    return float(value)


def _state_store(store: Mapping[str, Any] | None) -> StateStoreSpec | None:
    if not store:
        return None
    url = _require(_get(store, "url"), "relay.stateStore.url")
    scheme, sep, rest = url.partition("://")
    if scheme not in ("redis", "rediss") or not sep or "@" in rest:
        raise SpecError("spec.relay.stateStore.url must be redis://host:port[/db] or rediss://... "
                        "without credentials (put the password in passwordSecretRef)")
    if "?" in rest or "#" in rest:
        # redis-py reads options from the query: ssl_cert_reqs=none turns certificate checks off
        raise SpecError("spec.relay.stateStore.url must not carry a query or fragment (options such as "
                        "ssl_cert_reqs=none would turn TLS verification off; the relay always verifies)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise SpecError(f"spec.relay.stateStore.url {url!r} must be redis[s]://host[:port][/db]")
    if _get(store, "tls", False):
        url = "rediss://" + rest
    ref = _get(store, "passwordSecretRef")
    password = None
    if ref:
        password = SecretKeyRef(_require(_get(ref, "name"), "relay.stateStore.passwordSecretRef.name"),
                                _get(ref, "key", "password"))
    ca_ref = _get(store, "caConfigMapRef")
    ca = None
    if ca_ref:
        if not url.startswith("rediss://"):
            raise SpecError("spec.relay.stateStore.caConfigMapRef needs TLS to the store (rediss:// or tls: true)")
        ca = ConfigMapKeyRef(_require(_get(ca_ref, "name"), "relay.stateStore.caConfigMapRef.name"),
                             _get(ca_ref, "key", names.STATE_CA_DEFAULT_KEY))
    return StateStoreSpec(url=url, password=password, ca=ca)


def _canary(value: Mapping[str, Any] | None) -> CanarySpec | None:
    if not value:
        return None
    to = _require(_get(value, "to"), "canary.to")
    from otp_relay.messages import invalid_number  # noqa: PLC0415  the relay's own check of a recipient

    if not isinstance(to, str) or invalid_number(to) is not None:  # never echoed: a phone number
        raise SpecError("spec.canary.to must be a valid phone number in E.164 (+ and 7 to 15 digits)")
    every = _get(value, "every", CANARY_DEFAULT_EVERY)
    seconds = window_seconds(every, "spec.canary.every")
    if seconds < parse_duration(CANARY_MIN_EVERY):
        raise SpecError(f"spec.canary.every must be at least {CANARY_MIN_EVERY} (the relay remembers a "
                        f"message for 30m, and Auth0's test message is always the same), not {every!r}")
    return CanarySpec(to=to, every=every, every_seconds=seconds)


# spec.voice defaults: the relay's own (the CRD repeats them; tests/crd checks they agree). A
# call is dearer and more abused than an SMS, so its per-recipient window is stricter.
VOICE_DEFAULT_PROFILE = relay_config.DEFAULT_VOICE_PROFILE
VOICE_DEFAULT_REPETITION = relay_config.DEFAULT_VOICE_REPETITION
_VOICE_LIMIT, _VOICE_WINDOW = relay_config.DEFAULT_VOICE_PER_RECIPIENT.split("/")


def _voice(value: Mapping[str, Any] | None) -> VoiceSpec | None:
    if not value or not _get(value, "enabled", True):
        return None
    caller_id = _require(_get(value, "callerId"), "voice.callerId")
    from otp_relay.messages import invalid_number  # noqa: PLC0415  the relay's own check of a number

    if not isinstance(caller_id, str) or invalid_number(caller_id) is not None:
        raise SpecError("spec.voice.callerId must be a phone number in E.164 (+ and 7 to 15 digits), "
                        "one 8x8 has whitelisted for the subaccount")
    profile = _get(value, "profile", VOICE_DEFAULT_PROFILE)
    profiles = {str(k): str(v) for k, v in (_get(value, "profiles", {}) or {}).items()}
    for locale, code in [("profile", profile), *profiles.items()]:
        if not relay_config.valid_voice_profile(code):
            raise SpecError(f"spec.voice.profiles: {code!r} is not an 8x8 speech profile code (like en-US-Standard-A)")
        if locale != "profile" and not relay_config.valid_locale(locale):
            raise SpecError(f"spec.voice.profiles: {locale!r} is not a locale (like en_US or fr)")
    repetition = int(_get(value, "repetition", VOICE_DEFAULT_REPETITION))
    if repetition not in relay_config.VOICE_REPETITIONS:
        raise SpecError(f"spec.voice.repetition must be 1 to 3 (what 8x8's say action takes), not {repetition}")
    per_recipient = _get(value, "perRecipient", {}) or {}
    limit = int(_get(per_recipient, "limit", int(_VOICE_LIMIT)))
    window = _get(per_recipient, "window", _VOICE_WINDOW)
    window_seconds(window, "spec.voice.perRecipient.window")
    return VoiceSpec(caller_id=caller_id, profile=profile, profiles=tuple(sorted(profiles.items())),
                     repetition=repetition, per_recipient_limit=limit, per_recipient_window=window,
                     offer=bool(_get(value, "offer", False)))


def _conversion(value: Mapping[str, Any] | None, replicas: int, state_store: StateStoreSpec | None
                ) -> ConversionSpec | None:
    if value is None or not _get(value, "enabled", True):
        return None
    failure_after = _get(value, "failureAfter", CONVERSION_DEFAULT_FAILURE_AFTER)
    if window_seconds(failure_after, "spec.conversion.failureAfter") >= parse_duration(CONVERSION_FEEDBACK_WINDOW):
        raise SpecError(f"spec.conversion.failureAfter must be less than {CONVERSION_FEEDBACK_WINDOW} (8x8 takes "
                        f"conversion feedback only within 15 minutes of the send), not {failure_after!r}")
    blocking = _get(value, "blocking", {}) or {}
    mode = _get(blocking, "mode", CONVERSION_DEFAULT_MODE)
    _one_of(mode, CONVERSION_MODES, "conversion.blocking.mode")
    allow = _get(blocking, "allow", []) or []
    if not isinstance(allow, list) or len(allow) > CONVERSION_MAX_ALLOW:
        raise SpecError(f"spec.conversion.blocking.allow must be a list of at most {CONVERSION_MAX_ALLOW} entries")
    for entry in allow:
        if not isinstance(entry, str) or not _ALLOW_ENTRY.match(entry):
            raise SpecError(f"spec.conversion.blocking.allow: {entry!r} is neither an ISO country code (two "
                            "capital letters, e.g. GB) nor a number prefix (+ and 1 to 8 digits, e.g. +4477)")
    min_sample = _get(blocking, "minSample")
    if min_sample is not None and (isinstance(min_sample, bool) or not isinstance(min_sample, int)
                                   or min_sample < CONVERSION_MIN_SAMPLE):
        raise SpecError(f"spec.conversion.blocking.minSample must be an integer of at least "
                        f"{CONVERSION_MIN_SAMPLE}, not {min_sample!r}")
    block_for = _get(blocking, "blockFor")
    if block_for is not None and window_seconds(block_for, "spec.conversion.blocking.blockFor") < parse_duration(
            CONVERSION_MIN_BLOCK_FOR):
        raise SpecError(f"spec.conversion.blocking.blockFor must be at least {CONVERSION_MIN_BLOCK_FOR}, "
                        f"not {block_for!r}")
    share = _get(blocking, "maxBlockedSharePercent")
    if share is not None and (isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 100):
        raise SpecError(f"spec.conversion.blocking.maxBlockedSharePercent must be an integer from 1 to 100, "
                        f"not {share!r}")
    if replicas > 1 and state_store is None:
        raise SpecError(f"spec.conversion with {replicas} replicas needs spec.relay.stateStore: Auth0's log "
                        "stream posts each event to one replica, which must find the message another replica "
                        "sent (and the conversion rule must count every replica's sends); set "
                        "spec.relay.stateStore or spec.relay.replicas: 1")
    return ConversionSpec(failure_after=failure_after, mode=mode, allow=tuple(dict.fromkeys(allow)),
                          min_sample=min_sample, block_for=block_for, max_blocked_share_percent=share)


def _policy_window(policy: Mapping[str, Any], field: str) -> str | None:
    """``spec.policy.<field>`` {limit, window} as the relay's ``LIMIT/WINDOW``, or None when unset."""
    value = _get(policy, field)
    if not value:
        return None
    window = _get(value, "window", "")
    window_seconds(window, f"spec.policy.{field}.window")
    return f"{int(_require(_get(value, 'limit'), f'policy.{field}.limit'))}/{window}"


def parse_channel(namespace: str, name: str, spec: Mapping[str, Any]) -> ChannelSpec:
    auth0 = _get(spec, "auth0", {})
    creds = _get(auth0, "credentialsSecretRef", {})
    sms = _get(spec, "sms", {})
    api_key = _get(sms, "apiKeySecretRef", {})
    policy = _get(spec, "policy", {})
    per_recipient = _get(policy, "perRecipient", {})
    relay = _get(spec, "relay", {})
    ingress = _get(relay, "ingress")
    state_store = _state_store(_get(relay, "stateStore"))
    replicas = int(_get(relay, "replicas", 2))

    domain = _require(_get(auth0, "domain"), "auth0.domain")
    if "/" in domain:
        raise SpecError(f"spec.auth0.domain must be host[:port] without scheme or path, not {domain!r}")

    ingress_spec = None
    if ingress:
        ingress_spec = IngressSpec(
            host=_require(_get(ingress, "host"), "relay.ingress.host"),
            class_name=_get(ingress, "className", ""),
            tls_secret_name=_get(ingress, "tlsSecretName", ""),
            annotations={str(k): str(v) for k, v in _get(ingress, "annotations", {}).items()},
        )
    public_url = _get(relay, "publicUrl", "")
    if not public_url:
        if ingress_spec is None:
            raise SpecError("spec.relay.publicUrl or spec.relay.ingress.host is required (how Auth0 reaches the relay)")
        public_url = f"https://{ingress_spec.host}"
    if urlsplit(public_url).scheme != "https":
        raise SpecError(f"spec.relay.publicUrl must be an https URL, not {public_url!r}")

    window = _get(per_recipient, "window", "10m")
    window_seconds(window)
    global_limit = _get(policy, "globalLimit", {})
    global_window = _get(global_limit, "window", "1s")
    window_seconds(global_window, "spec.policy.globalLimit.window")
    return ChannelSpec(
        namespace=namespace,
        name=name,
        auth0=Auth0Spec(
            domain=domain,
            credentials_secret=_require(_get(creds, "name"), "auth0.credentialsSecretRef.name"),
            client_id_key=_get(creds, "clientIdKey", "client_id"),
            client_secret_key=_get(creds, "clientSecretKey", "client_secret"),
            integration=_one_of(_get(auth0, "integration", "phone-provider"), INTEGRATIONS, "auth0.integration"),
            name=_get(auth0, "name", "") or names.default_auth0_name(namespace, name),
            replace_foreign_provider=bool(_get(auth0, "replaceForeignProvider", False)),
            replace_foreign_action=bool(_get(auth0, "replaceForeignAction", False)),
            manage_routing=bool(_get(auth0, "manageRouting", False)),
            flows=_flows(_get(auth0, "flows")),
        ),
        sms=SmsSpec(
            subaccount_id=_require(_get(sms, "subaccountId"), "sms.subaccountId"),
            api_key=SecretKeyRef(
                _require(_get(api_key, "name"), "sms.apiKeySecretRef.name"), _get(api_key, "key", "apikey")
            ),
            region=_one_of(_get(sms, "region", "ap"), REGIONS, "sms.region"),
            base_url=_get(sms, "baseUrl", ""),
            sender=_get(sms, "sender", ""),
            encoding=_one_of(_get(sms, "encoding", "AUTO"), ENCODINGS, "sms.encoding"),
        ),
        policy=PolicySpec(
            allowed_countries=tuple(_get(policy, "allowedCountries", [])),
            per_recipient_limit=int(_get(per_recipient, "limit", 5)),
            per_recipient_window=window,
            global_limit=int(_get(global_limit, "limit", 100)),
            global_window=global_window,
            delivery_ratio_threshold=_ratio(_get(policy, "deliveryRatioThreshold")),
            per_prefix=_policy_window(policy, "perPrefix"),
            country_hourly=_policy_window(policy, "countryHourly"),
            country_daily=_policy_window(policy, "countryDaily"),
            per_client_ip=_policy_window(policy, "perClientIp"),
            max_segments=int(_get(policy, "maxSegments")) if _get(policy, "maxSegments") else None,
            code_validity=_get(policy, "codeValidity") or None,
            allow_number_types=tuple(_get(policy, "allowNumberTypes", [])),
            allow_non_geographic=tuple(int(c) for c in _get(policy, "allowNonGeographic", [])),
            monitor_rules=tuple(_get(policy, "monitorRules", [])),
        ),
        relay=RelaySpec(
            replicas=replicas,
            public_url=public_url.rstrip("/"),
            ingress=ingress_spec,
            resources=dict(_get(relay, "resources", {})),
            state_store=state_store,
            pod_template=dict(_get(relay, "podTemplate", {})),
        ),
        suspend=bool(_get(spec, "suspend", False)),
        deletion_policy=_one_of(_get(spec, "deletionPolicy", "Delete"), DELETION_POLICIES, "deletionPolicy"),
        canary=_canary(_get(spec, "canary")),
        voice=_voice(_get(spec, "voice")),
        conversion=_conversion(spec.get("conversion"), replicas, state_store),
    )
