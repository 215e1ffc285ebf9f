"""What we want in Auth0, what we saw there, and the pure decisions between the two.

Nothing here does I/O. `sync.py` reads the tenant into the `Observed*` records, asks the
`plan_*` functions what to write and writes exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

Integration = Literal["phone-provider", "send-phone-message", "legacy-hook"]
INTEGRATIONS: tuple[Integration, ...] = get_args(Integration)
# The tenant's phone flows a channel can be for (spec.auth0.flows): MFA SMS, and the codes of
# every passwordless `sms` connection. Default: both.
MFA_FLOW, PASSWORDLESS_FLOW = "mfa", "passwordless"
FLOWS = (MFA_FLOW, PASSWORDLESS_FLOW)

RELAY_URL_SECRET = "RELAY_URL"
SIGNING_KEY_SECRET = "RELAY_SIGNING_KEY"
SECRET_NAMES = (RELAY_URL_SECRET, SIGNING_KEY_SECRET)

ACTION_RUNTIME = "node22"
CUSTOM_PROVIDER = "custom"
HOOK_TRIGGER = "send-phone-message"

# Auth0 trigger and its version for each action-based integration.
ACTION_TRIGGERS: dict[Integration, tuple[str, str]] = {
    "phone-provider": ("custom-phone-provider", "v1"),
    "send-phone-message": ("send-phone-message", "v2"),
}

# Scopes each operation needs, checked against the token's grant before any request. Every
# ensure also reads the phone routing (tenant settings, MFA phone factor).
ROUTING_READ_SCOPES = frozenset({"read:tenant_settings", "read:guardian_factors"})
# With spec.auth0.manageRouting the operator changes them (and puts them back on removal).
ROUTING_WRITE_SCOPES = frozenset({"update:tenant_settings", "update:guardian_factors"})
# Reading the passwordless sms connections (when spec.auth0.flows includes passwordless). Since
# Auth0's connection-options scope migration (2025-07-08) a connection's `options`, which say
# where its codes go, are answered only with read:connections_options.
PASSWORDLESS_READ_SCOPES = frozenset({"read:connections", "read:connections_options"})
# With manageRouting in phone-provider mode, connections are moved to the tenant provider
# (a PATCH whose body has `options` needs update:connections_options).
PASSWORDLESS_WRITE_SCOPES = PASSWORDLESS_READ_SCOPES | {"update:connections", "update:connections_options"}
# spec.canary: POST /branding/phone/providers/{id}/try (phone-provider mode only, whose scopes
# already include it: the canary needs no other scope; tests/auth0/test_canary.py checks)
CANARY_SCOPES = frozenset({"create:phone_providers"})
REQUIRED_SCOPES: dict[tuple[Integration, str], frozenset[str]] = {
    ("phone-provider", "ensure"): frozenset(
        {"read:actions", "create:actions", "update:actions",
         "read:phone_providers", "create:phone_providers", "update:phone_providers"}) | ROUTING_READ_SCOPES,
    ("phone-provider", "remove"): frozenset(
        {"read:actions", "update:actions", "delete:actions", "read:phone_providers",
         "delete:phone_providers"}),
    ("send-phone-message", "ensure"): frozenset({"read:actions", "create:actions", "update:actions"})
    | ROUTING_READ_SCOPES,
    ("send-phone-message", "remove"): frozenset({"read:actions", "update:actions", "delete:actions"}),
    # An ensure deletes stale hook secrets (DELETE /hooks/{id}/secrets needs delete:hooks) after
    # other writes: checked up front, so it never fails half-way for want of it.
    ("legacy-hook", "ensure"): frozenset({"read:hooks", "create:hooks", "update:hooks", "delete:hooks"})
    | ROUTING_READ_SCOPES,
    ("legacy-hook", "remove"): frozenset({"read:hooks", "delete:hooks"}),
}


def required_scopes(integration: Integration, operation: str, *, passwordless: bool = True,
                    routing_writes: bool = False) -> frozenset[str]:
    """The scopes the pre-check demands for one operation (the one source of them)."""
    required = REQUIRED_SCOPES[(integration, operation)]
    if operation == "ensure" and passwordless:
        required |= PASSWORDLESS_READ_SCOPES
    if routing_writes:
        required |= ROUTING_WRITE_SCOPES | ROUTING_READ_SCOPES
        if passwordless and integration == "phone-provider":
            required |= PASSWORDLESS_WRITE_SCOPES
    return required


def scopes_for(integration: Integration) -> frozenset[str]:
    """Every scope the M2M application needs for `integration` (ensure and remove, default
    flows), without manageRouting's ROUTING_WRITE_SCOPES: the one source for the README table
    and examples/secrets.yaml (tests/auth0/test_scopes_documented.py compares them)."""
    return required_scopes(integration, "ensure") | required_scopes(integration, "remove")


def manage_routing_scopes_for(integration: Integration) -> frozenset[str]:
    """What spec.auth0.manageRouting adds to `scopes_for` (default flows)."""
    return required_scopes(integration, "ensure", routing_writes=True) - scopes_for(integration)

_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_OWNER = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Auth0's hook name rule; actions accept more, but one rule keeps names portable across modes.
_NAME = re.compile(r"^[a-zA-Z0-9]([ \-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Auth0Credentials:
    """Management API client credentials for one tenant (`domain` is host[:port], no scheme)."""

    domain: str
    client_id: str
    client_secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _DOMAIN.match(self.domain or ""):
            raise ValueError(
                f"Auth0 domain must be host[:port] without scheme or path, got {self.domain!r}")
        if not self.client_id:
            raise ValueError("Auth0 client_id is empty")
        if not self.client_secret:
            raise ValueError("Auth0 client_secret is empty")

    @property
    def audience(self) -> str:
        return f"https://{self.domain}/api/v2/"


@dataclass(frozen=True)
class DesiredIntegration:
    """The integration one OtpChannel wants in its tenant."""

    owner: str  # "namespace/name" of the OtpChannel
    integration: Integration
    name: str  # Auth0-side name of the action or hook
    relay_url: str
    signing_key: str = field(repr=False)
    replace_foreign_provider: bool = False
    # Replace an action bound to custom-phone-provider that no channel owns.
    replace_foreign_action: bool = False
    # Change the tenant's phone routing (recorded, restored on removal) instead of reporting it.
    manage_routing: bool = False
    # The phone flows that must reach the relay for PhoneRouting to be True (FLOWS).
    flows: tuple[str, ...] = FLOWS
    # spec.voice: the relay places calls, so the provider may offer voice; offer_voice: the
    # tenant's MFA message types must include voice (added by manage_routing).
    voice: bool = False
    offer_voice: bool = False

    def __post_init__(self) -> None:
        if not _OWNER.match(self.owner or ""):
            raise ValueError(f"owner must be 'namespace/name' of an OtpChannel, got {self.owner!r}")
        if self.integration not in INTEGRATIONS:
            raise ValueError(
                f"integration must be one of {', '.join(INTEGRATIONS)}, got {self.integration!r}")
        validate_name(self.name)
        validate_relay_url(self.relay_url)
        if not self.flows or any(f not in FLOWS for f in self.flows):
            raise ValueError(f"flows must be a non-empty list of {', '.join(FLOWS)}, got {list(self.flows)}")
        if self.offer_voice and not self.voice:
            raise ValueError("offer_voice needs voice (a channel that places calls)")
        if not self.signing_key or self.signing_key.strip() != self.signing_key:
            raise ValueError("signing_key must be a non-empty string without surrounding whitespace")

    def secrets(self) -> dict[str, str]:
        return {RELAY_URL_SECRET: self.relay_url.rstrip("/"), SIGNING_KEY_SECRET: self.signing_key}


def validate_name(name: str) -> None:
    if not name or len(name) > 100 or not _NAME.match(name):
        raise ValueError(
            "Auth0 name must be 1-100 letters, digits, spaces or dashes, starting and ending with a "
            f"letter or digit, got {name!r}")


def validate_relay_url(url: str) -> None:
    parts = urlsplit(url or "")
    loopback_http = parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS
    if parts.scheme != "https" and not loopback_http:
        raise ValueError(f"relay_url must be an https:// URL (http only on loopback), got {url!r}")
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise ValueError(f"relay_url must be scheme://host[:port][/path] only, got {url!r}")


# --- what we write ---------------------------------------------------------------------------


def secrets_hash(secrets: Mapping[str, str], key: bytes) -> str:
    """Keyed hash of the secret values we wrote: lets us notice a change without storing them."""
    canonical = json.dumps(sorted(secrets.items()), separators=(",", ":")).encode()
    return "hmac-sha256:" + hmac.new(key, canonical, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Target:
    """Everything `ensure` writes for one desired integration, plus its fingerprint."""

    desired: DesiredIntegration
    code: str
    secrets: Mapping[str, str] = field(repr=False)
    secrets_hash: str
    fingerprint: str

    @property
    def integration(self) -> Integration:
        return self.desired.integration

    @property
    def name(self) -> str:
        return self.desired.name

    @property
    def owner(self) -> str:
        return self.desired.owner

    @property
    def trigger(self) -> tuple[str, str]:
        return ACTION_TRIGGERS[self.desired.integration]


def build_target(desired: DesiredIntegration, code: str, hash_key: bytes) -> Target:
    secrets = desired.secrets()
    hashed = secrets_hash(secrets, hash_key)
    settings: dict[str, Any] = {"integration": desired.integration, "owner": desired.owner,
                                "name": desired.name}
    if desired.integration == "legacy-hook":
        settings |= {"trigger": HOOK_TRIGGER, "enabled": True}
    else:
        settings |= {"trigger": list(ACTION_TRIGGERS[desired.integration]), "runtime": ACTION_RUNTIME}
    if desired.integration == "phone-provider":
        settings["provider"] = {"name": CUSTOM_PROVIDER}
    settings |= {"code_sha256": hashlib.sha256(code.encode()).hexdigest(),
                 "secret_names": sorted(secrets), "secrets_hash": hashed}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return Target(desired, code, secrets, hashed, "sha256:" + digest)


# --- what we saw ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedAction:
    id: str
    name: str
    code: str | None
    secret_names: frozenset[str]
    status: str | None
    deployed_version: int | None
    deployed_code: str | None
    all_changes_deployed: bool
    owner: str | None  # from the marker in `code`
    deployed_version_id: str | None = None
    build_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObservedBinding:
    action_id: str | None
    action_name: str | None
    display_name: str | None


@dataclass(frozen=True)
class ObservedProvider:
    id: str
    name: str
    disabled: bool
    delivery_methods: tuple[str, ...]


@dataclass(frozen=True)
class ObservedHook:
    id: str
    name: str
    script: str | None
    enabled: bool
    owner: str | None


@dataclass(frozen=True)
class Recorded:
    """What the operator kept in status.auth0 after the last successful ensure."""

    integration: str | None = None
    action_id: str | None = None
    hook_id: str | None = None
    provider_id: str | None = None
    deployed_version: int | None = None
    secrets_hash: str | None = None
    fingerprint: str | None = None
    routing_changes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Recorded | None:
        if not status:
            return None
        version = status.get("deployedVersion")
        return cls(
            integration=status.get("integration"),
            action_id=status.get("actionId"),
            hook_id=status.get("hookId"),
            provider_id=status.get("providerId"),
            deployed_version=int(version) if isinstance(version, (int, float, str)) and str(version).isdigit() else None,
            secrets_hash=status.get("secretsHash"),
            fingerprint=status.get("fingerprint"),
            routing_changes=dict(status.get("routingChanges") or {}),
        )


# --- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """Another channel, or something we did not write, holds the integration point."""

    message: str


def describe_holder(kind: str, name: str, owner: str | None) -> str:
    if owner:
        return f"{kind} {name!r} belongs to OtpChannel {owner}"
    return f"{kind} {name!r} is not managed by otp-relay-operator"


def is_ours(owner_marker: str | None, object_id: str, target_owner: str,
            recorded_id: str | None) -> bool:
    """Ours if the marker names our channel, or our status recorded this exact object (the
    marker may have been wiped by an edit in the dashboard; that is drift we repair)."""
    if owner_marker is not None:
        return owner_marker == target_owner
    return recorded_id is not None and recorded_id == object_id


def pick_own_action(actions: Sequence[ObservedAction], target: Target,
                    recorded: Recorded | None) -> ObservedAction | Conflict | None:
    """Our action among those on the trigger, or the reason we may not touch the trigger."""
    recorded_id = recorded.action_id if recorded else None
    own = [a for a in actions if is_ours(a.owner, a.id, target.owner, recorded_id)]
    same_name = [a for a in actions if a.name == target.name and a not in own]
    if same_name:
        return Conflict(describe_holder("action", same_name[0].name, same_name[0].owner))
    by_name = [a for a in own if a.name == target.name]
    return next(iter(by_name or own), None)


@dataclass(frozen=True)
class ActionPlan:
    create: bool = False
    write_code: bool = False
    write_secrets: bool = False
    deploy: bool = False
    repaired: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()

    @property
    def writes_anything(self) -> bool:
        return self.create or self.write_code or self.write_secrets or self.deploy


def recorded_matches(target: Target, recorded: Recorded | None) -> bool:
    return recorded is not None and recorded.fingerprint == target.fingerprint


def plan_action(target: Target, observed: ObservedAction | None,
                recorded: Recorded | None) -> ActionPlan:
    if observed is None:
        deleted = ("action was deleted outside the operator",) if recorded and recorded.action_id else ()
        return ActionPlan(create=True, deploy=True, repaired=deleted)
    in_sync = recorded_matches(target, recorded)
    repaired: list[str] = []
    updated: list[str] = []
    write_code = observed.code != target.code
    if write_code:
        (repaired if in_sync else updated).append(
            "action code was edited outside the operator" if in_sync else "action code")
    missing = sorted(set(SECRET_NAMES) - observed.secret_names)
    for name in missing:
        repaired.append(f"action secret {name} was deleted")
    secrets_changed = recorded is None or recorded.secrets_hash != target.secrets_hash
    if secrets_changed and not missing:
        updated.append("action secrets")
    write_secrets = bool(missing) or secrets_changed
    stale_deployment = (observed.deployed_version is None
                        or not observed.all_changes_deployed
                        or (observed.deployed_code is not None and observed.deployed_code != target.code))
    if stale_deployment and not (write_code or write_secrets):
        repaired.append("deployed action version differed from the draft")
    return ActionPlan(write_code=write_code, write_secrets=write_secrets,
                      deploy=write_code or write_secrets or stale_deployment,
                      repaired=tuple(repaired), updated=tuple(updated))


@dataclass(frozen=True)
class BindingRef:
    action_id: str
    display_name: str


def binding_conflict(bindings: Sequence[ObservedBinding], owners: Mapping[str, str | None],
                     target_owner: str) -> Conflict | None:
    """A binding in the chain whose action is marked as another channel's."""
    for binding in bindings:
        holder = owners.get(binding.action_id or "")
        if holder and holder != target_owner:
            return Conflict(describe_holder("bound send-phone-message action",
                                            binding.action_name or binding.action_id or "?", holder)
                            + "; two channels would send every OTP twice")
    return None


def foreign_provider_binding(bindings: Sequence[ObservedBinding], owners: Mapping[str, str | None],
                             target: Target, own_ids: Iterable[str]) -> Conflict | None:
    """Auth0 runs the one action bound to custom-phone-provider: a foreign one is replaced only
    when the channel says so, another channel's never."""
    mine = set(own_ids)
    for binding in bindings:
        if binding.action_id in mine:
            continue
        name = binding.action_name or binding.action_id or "?"
        holder = owners.get(binding.action_id or "")
        if holder and holder != target.owner:
            return Conflict(describe_holder("the action bound to custom-phone-provider", name, holder)
                            + "; a tenant runs one phone provider action")
        if not holder and not target.desired.replace_foreign_action:
            return Conflict(
                f"custom-phone-provider already runs action {name!r}, which otp-relay-operator does "
                "not manage (a tenant runs one phone provider action): remove it (Dashboard: "
                "Branding > Phone Provider > Custom > Reset) or set "
                "spec.auth0.replaceForeignAction: true to replace it")
    return None


def plan_provider_binding(bindings: Sequence[ObservedBinding], action_id: str,
                          display_name: str) -> list[BindingRef] | None:
    """Exactly our action on custom-phone-provider; None when that is already so."""
    if [b.action_id for b in bindings] == [action_id]:
        return None
    return [BindingRef(action_id, display_name)]


def plan_binding_add(bindings: Sequence[ObservedBinding], action_id: str,
                     display_name: str) -> list[BindingRef] | None:
    """The full list to PATCH (every binding kept, ours appended), None if already bound."""
    if any(b.action_id == action_id for b in bindings):
        return None
    return [*_keep(bindings), BindingRef(action_id, display_name)]


def plan_binding_removal(bindings: Sequence[ObservedBinding], action_id: str) -> list[BindingRef] | None:
    """The list without our binding, None if ours is not in it."""
    if not any(b.action_id == action_id for b in bindings):
        return None
    return _keep(b for b in bindings if b.action_id != action_id)


def _keep(bindings: Iterable[ObservedBinding]) -> list[BindingRef]:
    return [BindingRef(b.action_id, b.display_name or b.action_name or b.action_id)
            for b in bindings if b.action_id]


@dataclass(frozen=True)
class ProviderPlan:
    create: bool = False
    update: bool = False
    repaired: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()


def plan_provider(providers: Sequence[ObservedProvider], replace_foreign: bool,
                  in_sync: bool, recorded_id: str | None = None,
                  methods: Sequence[str] = ("text",)) -> ProviderPlan | Conflict:
    """A provider record we created and someone switched to another type is drift we repair;
    a foreign provider is only replaced when the channel says so."""
    if not providers:
        return ProviderPlan(create=True, repaired=("phone provider was deleted",) if in_sync else ())
    current = providers[0]
    if current.name != CUSTOM_PROVIDER:
        if current.id == recorded_id:
            return ProviderPlan(update=True, repaired=(
                f"phone provider was switched to {current.name!r}",))
        if not replace_foreign:
            return Conflict(
                f"the tenant's phone provider is {current.name!r}, not {CUSTOM_PROVIDER!r}; set "
                "replace_foreign_provider (spec.auth0.replaceForeignProvider) to replace it")
        note = f"phone provider {current.name!r} replaced by {CUSTOM_PROVIDER!r}"
        return ProviderPlan(update=True, repaired=(note,) if in_sync else (), updated=() if in_sync else (note,))
    repaired: list[str] = []
    if current.disabled:
        repaired.append("phone provider was disabled")
    if tuple(current.delivery_methods) != tuple(methods):
        repaired.append(f"phone provider delivery methods set to {list(methods)} (the MFA phone "
                        "message types need them)")
    return ProviderPlan(update=bool(repaired), repaired=tuple(repaired))


@dataclass(frozen=True)
class HookPlan:
    create: bool = False
    script: bool = False
    enable: bool = False
    add_secrets: tuple[str, ...] = ()
    change_secrets: tuple[str, ...] = ()
    delete_secrets: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()


def pick_own_hook(hooks: Sequence[ObservedHook], target: Target,
                  recorded: Recorded | None) -> ObservedHook | Conflict | None:
    recorded_id = recorded.hook_id if recorded else None
    own = [h for h in hooks if is_ours(h.owner, h.id, target.owner, recorded_id)]
    same_name = [h for h in hooks if h.name == target.name and h not in own]
    if same_name:
        return Conflict(describe_holder("hook", same_name[0].name, same_name[0].owner))
    enabled_others = [h for h in hooks if h.enabled and h not in own]
    if enabled_others:
        return Conflict(describe_holder(f"enabled {HOOK_TRIGGER} hook", enabled_others[0].name,
                                        enabled_others[0].owner)
                        + "; Auth0 runs one enabled hook per trigger")
    by_name = [h for h in own if h.name == target.name]
    return next(iter(by_name or own), None)


def plan_hook(target: Target, observed: ObservedHook | None, secret_names: frozenset[str],
              recorded: Recorded | None) -> HookPlan:
    wanted = set(target.secrets)
    if observed is None:
        deleted = ("hook was deleted outside the operator",) if recorded and recorded.hook_id else ()
        return HookPlan(create=True, enable=True, add_secrets=tuple(sorted(wanted)), repaired=deleted)
    in_sync = recorded_matches(target, recorded)
    repaired: list[str] = []
    updated: list[str] = []
    script = observed.script != target.code
    if script:
        (repaired if in_sync else updated).append(
            "hook script was edited outside the operator" if in_sync else "hook script")
    if not observed.enabled:
        repaired.append("hook was disabled")
    missing = tuple(sorted(wanted - secret_names))
    repaired.extend(f"hook secret {name} was deleted" for name in missing)
    stale = tuple(sorted(secret_names - wanted))
    if stale:
        repaired.append("stale hook secrets removed: " + ", ".join(stale))
    secrets_changed = recorded is None or recorded.secrets_hash != target.secrets_hash
    change = tuple(sorted(wanted & secret_names)) if secrets_changed else ()
    if change:
        updated.append("hook secrets")
    return HookPlan(script=script, enable=not observed.enabled, add_secrets=missing,
                    change_secrets=change, delete_secrets=stale,
                    repaired=tuple(repaired), updated=tuple(updated))


def missing_scopes(required: Iterable[str], granted: Iterable[str] | None) -> list[str]:
    if granted is None:
        return []
    return sorted(set(required) - set(granted))


# --- spec.conversion: the channel's Auth0 log stream -------------------------------------------

# Needed only with spec.conversion (the README's scope table lists them apart).
LOG_STREAM_SCOPES = frozenset({"read:log_streams", "create:log_streams", "update:log_streams",
                               "delete:log_streams"})
# Auth0's log categories the relay needs: the MFA phone events (gd_*) are in "other", and the
# passwordless logins that use (or fail) a code are "s"/"f".
LOG_STREAM_FILTERS = ("auth.login.fail", "auth.login.success", "other")
LOG_STREAM_FORMAT = "JSONARRAY"
LOG_STREAM_CONTENT_TYPE = "application/json"
LOG_STREAM_ACTIVE = "active"


@dataclass(frozen=True)
class DesiredLogStream:
    """The http log stream of one channel. ``tokens``: every token the relay accepts, oldest
    first; the stream sends the newest. Never printed (``repr`` leaves the tokens out)."""

    name: str
    endpoint: str  # <publicUrl>/v1/auth0-logs
    tokens: tuple[str, ...] = field(repr=False)

    @property
    def authorization(self) -> str:
        return f"Bearer {self.tokens[-1]}"

    def sink(self) -> dict[str, str]:
        return {"httpEndpoint": self.endpoint, "httpAuthorization": self.authorization,
                "httpContentFormat": LOG_STREAM_FORMAT, "httpContentType": LOG_STREAM_CONTENT_TYPE}


@dataclass(frozen=True)
class ObservedLogStream:
    id: str
    name: str
    type: str
    status: str
    endpoint: str
    authorization: str = field(repr=False)
    content_format: str
    content_type: str
    filters: tuple[str, ...]  # category names, sorted


@dataclass(frozen=True)
class LogStreamPlan:
    """What to write: ``create``; or PATCH ``sink``/``filters``/``resume`` on ``stream``;
    ``conflict`` (someone else's stream has our name: never touched); ``changed`` names what a
    PATCH corrects (never the token's value)."""

    stream: ObservedLogStream | None
    create: bool = False
    sink: bool = False
    filters: bool = False
    resume: bool = False
    conflict: str = ""
    changed: tuple[str, ...] = ()

    @property
    def writes(self) -> bool:
        return self.create or self.sink or self.filters or self.resume


def is_our_log_stream(stream: ObservedLogStream, desired: DesiredLogStream) -> bool:
    """Ours: it posts to our endpoint, or it carries one of our tokens (nobody else has them)."""
    return stream.type == "http" and (
        stream.endpoint == desired.endpoint
        or any(hmac.compare_digest(stream.authorization, f"Bearer {t}") for t in desired.tokens))


def plan_log_stream(desired: DesiredLogStream, streams: Sequence[ObservedLogStream],
                    relay_ready: bool) -> LogStreamPlan:
    """Pure. Without a ready relay nothing is written (the token moves, and a paused stream is
    resumed, only once the relay serves and has loaded every token)."""
    named = [s for s in streams if s.name == desired.name]
    if not named:
        return LogStreamPlan(None, create=relay_ready)
    stream = named[0]
    if not is_our_log_stream(stream, desired):
        return LogStreamPlan(stream, conflict=(
            f"a log stream named {desired.name!r} ({stream.id}) exists and is not this channel's: it is "
            f"{'not an http stream' if stream.type != 'http' else 'sending to ' + stream.endpoint}; "
            "the operator does not change it: delete or rename it"))
    changed = []
    if stream.endpoint != desired.endpoint:
        changed.append("endpoint")
    if not hmac.compare_digest(stream.authorization, desired.authorization):
        changed.append("bearer token")
    if (stream.content_format, stream.content_type) != (LOG_STREAM_FORMAT, LOG_STREAM_CONTENT_TYPE):
        changed.append("content format")
    sink = bool(changed)
    filters = stream.filters != tuple(sorted(LOG_STREAM_FILTERS))
    if filters:
        changed.append("filters")
    resume = stream.status != LOG_STREAM_ACTIVE
    if not relay_ready:
        return LogStreamPlan(stream, changed=tuple(changed))
    return LogStreamPlan(stream, sink=sink, filters=filters, resume=resume, changed=tuple(changed))
