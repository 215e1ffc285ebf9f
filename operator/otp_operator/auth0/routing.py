"""Phone routing: would a real tenant send MFA SMS to the code we registered? Pure decisions.

Auth0 has two regimes, chosen per tenant by the tenant setting `phone_consolidated_experience`
(the Unified Phone Experience, on for new tenants):
- on: every phone message goes to the tenant's phone provider; a `custom` provider runs the
  action bound to `custom-phone-provider` (our `phone-provider` mode). Hooks and
  `send-phone-message` actions never run for MFA.
- off: MFA SMS follow the Guardian phone factor's selected provider; only `phone-message-hook`
  runs our code (enabled hooks, then bound `send-phone-message` actions).
In both, MFA by SMS needs the `sms` factor on and `sms` among the phone message types.
Nothing in the Management API fails when this is wrong: the code is registered and never runs.

Tenant generations:
- the setting may be absent from the tenant settings. That is not read as either value: the
  legacy Guardian selected-provider endpoint decides (200: the legacy path is live, so the
  experience is off; 403 `legacy_mfa_phone_provider_not_allowed`: the tenant is on it).
- the legacy endpoints answer that 403 unless the tenant has the flag
  `legacy_mfa_phone_provider`, which only Auth0 sets (an M2M token cannot). On such a tenant
  MFA can never be switched to `phone-message-hook`: the legacy modes cannot be routed, by us
  or by anyone but Auth0 Support. That is reported (reason LegacyPhoneProviderNotAllowed), and
  with manageRouting nothing is changed at all (`unfixable`): turning the experience off first
  would leave the whole tenant off it with MFA going nowhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .model import MFA_FLOW, PASSWORDLESS_FLOW, Integration

PHONE_MESSAGE_HOOK = "phone-message-hook"
SMS, VOICE = "sms", "voice"
# status.auth0.routing only: MFA codes read out in a phone call (part of the mfa flow).
MFA_VOICE_FLOW = "mfa-voice"

# Status keys (camelCase) of the settings the operator may change, with their Auth0 meaning.
UPE_KEY = "phoneConsolidatedExperience"
SMS_FACTOR_KEY = "smsFactor"
MESSAGE_TYPES_KEY = "messageTypes"
SELECTED_PROVIDER_KEY = "selectedProvider"
# Passwordless sms connections moved to the tenant phone provider: connection id -> the
# connection's options.use_phone_provider before (None: it was absent).
CONNECTIONS_KEY = "usePhoneProvider"

ROUTED = "Routed"
WRONG_EXPERIENCE = "WrongPhoneExperience"
GUARDIAN_PROVIDER = "GuardianProviderNotHook"
SMS_FACTOR_DISABLED = "SmsFactorDisabled"
SMS_MESSAGE_TYPE_MISSING = "SmsMessageTypeMissing"
LEGACY_NOT_ALLOWED = "LegacyPhoneProviderNotAllowed"
PASSWORDLESS_NOT_ROUTED = "PasswordlessNotRouted"
PASSWORDLESS_UNKNOWN = "PasswordlessRoutingUnknown"
VOICE_NOT_CONFIGURED = "VoiceNotConfigured"
VOICE_MESSAGE_TYPE_MISSING = "VoiceMessageTypeMissing"
REASONS = (WRONG_EXPERIENCE, GUARDIAN_PROVIDER, SMS_FACTOR_DISABLED, SMS_MESSAGE_TYPE_MISSING,
           LEGACY_NOT_ALLOWED, PASSWORDLESS_NOT_ROUTED, PASSWORDLESS_UNKNOWN, VOICE_NOT_CONFIGURED,
           VOICE_MESSAGE_TYPE_MISSING)
TRUE, FALSE, UNKNOWN = "true", "false", "unknown"
# The per-connection switch users report for "Use Tenant-Level Messaging Provider" (not in
# Auth0's documentation: trusted when set, never guessed when absent).
USE_PHONE_PROVIDER = "use_phone_provider"
_TOGGLE = ("options.use_phone_provider: true (Dashboard: Authentication > Passwordless > SMS > "
           "Use Tenant-Level Messaging Provider)")
_OPTIONS_UNREAD = ("Auth0 answered the connection without its options, which it gives only to a "
                   "client with the read:connections_options scope: grant it")
# Auth0's errorCode on the legacy Guardian phone endpoints of a tenant without the legacy flag.
LEGACY_NOT_ALLOWED_CODE = "legacy_mfa_phone_provider_not_allowed"
# Option values that are credentials of a connection's own provider. `PATCH /connections/{id}`
# replaces the whole `options` object, so a change is only safe when the read gave them back:
# a credential the answer left out (its provider's other settings present) would be erased.
_OWN_CREDENTIALS = {"twilio": ("twilio_sid", "twilio_token"), "sms_gateway": ("gateway_authentication",)}


@dataclass(frozen=True)
class ObservedConnection:
    """A passwordless `strategy: sms` connection (GET /api/v2/connections?strategy=sms)."""
    id: str
    name: str
    options: Mapping[str, Any]
    # False: Auth0 answered without `options` (the caller lacks read:connections_options).
    options_read: bool = True


@dataclass(frozen=True)
class ObservedRouting:
    upe: bool  # the experience in effect (found out when the setting is absent)
    sms_factor: bool
    message_types: tuple[str, ...]
    selected_provider: str | None  # None when the legacy endpoint was not asked or refused
    # False: the tenant settings leave phone_consolidated_experience out (`upe` then comes from
    # the legacy endpoint's answer).
    experience_set: bool = True
    # The legacy selected-provider endpoint answered (True), answered 403
    # legacy_mfa_phone_provider_not_allowed (False), or was not asked (None).
    legacy_allowed: bool | None = None
    # The passwordless sms connections (None: not read, the channel is not for passwordless).
    connections: tuple[ObservedConnection, ...] | None = None
    # GET /guardian/policies (None: not read, the client lacks the optional read:mfa_policies).
    mfa_policies: tuple[str, ...] | None = None


# When Guardian prompts for MFA (status.auth0.routing[mfa].mfaPolicy): shown, never a reason
# for PhoneRouting (with "never", MFA SMS go out only where an Action asks for MFA).
MFA_POLICY_NEVER, MFA_POLICY_UNREAD = "never", "unknown"


def mfa_policy(observed: ObservedRouting | None) -> str:
    if observed is None or observed.mfa_policies is None:
        return MFA_POLICY_UNREAD
    return ",".join(observed.mfa_policies) or MFA_POLICY_NEVER


def experience_in_effect(setting: bool | None, legacy_allowed: bool | None) -> bool | None:
    """The experience a tenant runs: its setting, or when that is absent, what the legacy
    endpoint's answer shows (None: not found out, ask the legacy endpoint)."""
    if setting is not None:
        return bool(setting)
    if legacy_allowed is None:
        return None
    return not legacy_allowed


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str  # names the exact setting and the fix
    key: str | None  # status key of the setting; None: no API call of ours can fix it
    wanted: Any  # the value that fixes it
    connection: ObservedConnection | None = None  # the passwordless connection it is about


def wants_upe(integration: Integration) -> bool:
    return integration == "phone-provider"


def _experience_source(observed: ObservedRouting) -> str:
    if observed.experience_set:
        return f"tenant setting phone_consolidated_experience: {str(observed.upe).lower()}"
    answer = "200" if observed.legacy_allowed else f"403 {LEGACY_NOT_ALLOWED_CODE}"
    return ("the tenant settings leave phone_consolidated_experience out, and GET "
            f"/api/v2/guardian/factors/phone/selected-provider answered {answer}")


def _message_types_put(types: list[str]) -> str:
    return f'PUT /api/v2/guardian/factors/phone/message-types {{"message_types": {types}}}'.replace("'", '"')


def problems(integration: Integration, observed: ObservedRouting, offer_voice: bool = False) -> list[Problem]:
    """What keeps MFA SMS (and, with `offer_voice`, MFA calls) from reaching `integration`, in
    the order they must be fixed."""
    found: list[Problem] = []
    if not wants_upe(integration) and observed.legacy_allowed is False:
        found.append(Problem(
            LEGACY_NOT_ALLOWED,
            "the tenant's legacy MFA phone endpoints answer 403 "
            f"{LEGACY_NOT_ALLOWED_CODE} (the tenant lacks the legacy_mfa_phone_provider flag), so "
            f"MFA can never be switched to {PHONE_MESSAGE_HOOK!r} and {integration} code never "
            "runs for MFA; this is not fixed by a retry or by manageRouting (a Management API "
            "token cannot set that flag): use integration phone-provider, or ask Auth0 Support "
            "to enable the legacy phone experience for this tenant",
            None, None))
        return found
    if wants_upe(integration) and not observed.upe:
        found.append(Problem(
            WRONG_EXPERIENCE,
            f"the tenant is off the Unified Phone Experience ({_experience_source(observed)}), "
            "so MFA SMS never reach the custom phone provider: turn it on (PATCH "
            '/api/v2/tenants/settings {"phone_consolidated_experience": true}) or use '
            "integration send-phone-message",
            UPE_KEY, True))
    if not wants_upe(integration) and observed.upe:
        found.append(Problem(
            WRONG_EXPERIENCE,
            f"the tenant uses the Unified Phone Experience ({_experience_source(observed)}), "
            f"which never runs {integration} code for "
            "MFA: use integration phone-provider, or turn it off (PATCH /api/v2/tenants/settings "
            '{"phone_consolidated_experience": false})',
            UPE_KEY, False))
    if not wants_upe(integration) and observed.selected_provider != PHONE_MESSAGE_HOOK:
        current = observed.selected_provider or "not selectable under the Unified Phone Experience"
        found.append(Problem(
            GUARDIAN_PROVIDER,
            f"the MFA phone provider is {current!r}, not {PHONE_MESSAGE_HOOK!r} (Dashboard: "
            "Multi-factor Auth > Phone Message > Custom): PUT "
            f'/api/v2/guardian/factors/phone/selected-provider {{"provider": "{PHONE_MESSAGE_HOOK}"}}',
            SELECTED_PROVIDER_KEY, PHONE_MESSAGE_HOOK))
    if not observed.sms_factor:
        found.append(Problem(
            SMS_FACTOR_DISABLED,
            'the MFA SMS factor is disabled: PUT /api/v2/guardian/factors/sms {"enabled": true}',
            SMS_FACTOR_KEY, True))
    types = list(observed.message_types)
    if SMS not in types:
        types.append(SMS)
        found.append(Problem(
            SMS_MESSAGE_TYPE_MISSING,
            f"the MFA phone message types {list(observed.message_types)} do not include 'sms': "
            + _message_types_put(types), MESSAGE_TYPES_KEY, list(types)))
    if offer_voice and VOICE not in types:
        types.append(VOICE)
        found.append(Problem(
            VOICE_MESSAGE_TYPE_MISSING,
            f"spec.voice.offer asks that users may choose a call, but the MFA phone message types "
            f"{list(observed.message_types)} do not include 'voice': " + _message_types_put(types),
            MESSAGE_TYPES_KEY, list(types)))
    return found


def voice_gap(observed: ObservedRouting | None, voice: bool) -> Problem | None:
    """The tenant offers MFA by phone call but the channel cannot place one (no spec.voice):
    every code a user asks to hear would be dropped. Not a change manageRouting makes (taking an
    option away from users is the tenant owner's call)."""
    if observed is None or voice or VOICE not in observed.message_types:
        return None
    without = [t for t in observed.message_types if t != VOICE] or [SMS]
    return Problem(
        VOICE_NOT_CONFIGURED,
        f"the MFA phone message types {list(observed.message_types)} include 'voice', so users "
        "may choose a call, but this channel has no spec.voice and their codes would be dropped: "
        "configure spec.voice (with a caller ID 8x8 has whitelisted for the subaccount), or stop "
        "offering calls: " + _message_types_put(without),
        None, None)


def withheld_credentials(options: Mapping[str, Any]) -> list[str]:
    """Credentials of the connection's own provider that the read did not give back (a
    `gateway_authentication` without its `secret`, a Twilio SID without its token)."""
    provider = "sms_gateway" if options.get("provider") == "sms_gateway" else "twilio"
    if provider == "twilio":
        present = [k for k in _OWN_CREDENTIALS["twilio"] if options.get(k)]
        return ["twilio_token"] if present == ["twilio_sid"] else []
    auth = options.get("gateway_authentication")
    return (["gateway_authentication.secret"]
            if isinstance(auth, Mapping) and not auth.get("secret") else [])


def connection_problems(integration: Integration, observed: ObservedRouting,
                        flows: tuple[str, ...]) -> list[Problem]:
    """What keeps passwordless codes of each checked connection from our code, as changes
    manageRouting could make (None key: it cannot). MFA problems come from `problems`."""
    if PASSWORDLESS_FLOW not in flows or not observed.connections:
        return []
    found: list[Problem] = []
    for connection in observed.connections:
        where = f"passwordless connection {connection.name!r}"
        if not wants_upe(integration):
            found.append(Problem(PASSWORDLESS_NOT_ROUTED, (
                f"{where}: passwordless codes never run {integration} code (Auth0 runs it for MFA "
                "only): use integration phone-provider, or leave passwordless out of "
                "spec.auth0.flows"), None, None, connection))
            continue
        if not connection.options_read:
            found.append(Problem(PASSWORDLESS_UNKNOWN, f"{where}: {_OPTIONS_UNREAD}", None, None,
                                 connection))
            continue
        if connection.options.get(USE_PHONE_PROVIDER) is True:
            continue
        withheld = withheld_credentials(connection.options)
        if withheld:
            found.append(Problem(PASSWORDLESS_NOT_ROUTED, (
                f"{where}: Auth0 did not return its {', '.join(withheld)}, and PATCH "
                "/api/v2/connections/{id} replaces the whole options object, so changing it "
                f"through the Management API would erase that credential: set {_TOGGLE} in "
                "the Dashboard"), None, None, connection))
            continue
        found.append(Problem(PASSWORDLESS_NOT_ROUTED, (
            f"{where}: PATCH /api/v2/connections/{connection.id} with its options and "
            f"{USE_PHONE_PROVIDER}: true ({_TOGGLE})"), CONNECTIONS_KEY, True, connection))
    return found


def after_changes(observed: ObservedRouting, made: list[Problem]) -> ObservedRouting:
    """The tenant as it is once the `made` changes were written (what the verdict judges)."""
    moved = {p.connection.id for p in made if p.connection is not None}
    connections = observed.connections and tuple(
        replace(c, options={**c.options, USE_PHONE_PROVIDER: True}) if c.id in moved else c
        for c in observed.connections)
    upe = next((bool(p.wanted) for p in made if p.key == UPE_KEY), observed.upe)
    types = next((tuple(p.wanted) for p in reversed(made) if p.key == MESSAGE_TYPES_KEY), observed.message_types)
    return replace(observed, upe=upe, connections=connections, message_types=types)


def change_names(changed: Mapping[str, Any]) -> list[str]:
    """Every recorded change, one name each (a connection's as usePhoneProvider/<id>)."""
    return sorted(f"{key}/{sub}" if isinstance(value, Mapping) else key
                  for key, value in changed.items()
                  for sub in (value if isinstance(value, Mapping) else (None,)))


def unfixable(found: list[Problem]) -> list[Problem]:
    """Problems no Management API call can fix: with manageRouting, nothing is changed then."""
    return [p for p in found if p.key is None]


def current_value(observed: ObservedRouting, problem: Problem) -> Any:
    """The value before `problem`'s change (a connection's: its use_phone_provider or None)."""
    if problem.connection is not None:
        return problem.connection.options.get(USE_PHONE_PROVIDER)
    key = problem.key
    assert key is not None  # every change has a setting or a connection
    return {UPE_KEY: observed.upe, SMS_FACTOR_KEY: observed.sms_factor,
            MESSAGE_TYPES_KEY: list(observed.message_types),
            SELECTED_PROVIDER_KEY: observed.selected_provider}[key]


def delivery_methods(observed: ObservedRouting | None, voice: bool = False,
                     offer_voice: bool = False) -> tuple[str, ...]:
    """The custom provider's delivery methods: text, and voice only when the channel places
    calls (`voice`) and the tenant's MFA message types ask for them or will (`offer_voice`;
    under UPE Auth0 refuses message types the provider does not offer)."""
    types = observed.message_types if observed else ()
    return ("text", "voice") if voice and (VOICE in types or offer_voice) else ("text",)


@dataclass(frozen=True)
class FlowState:
    """One phone flow of the tenant: does it reach our code? `setting`: what decides it."""
    flow: str  # MFA_FLOW | PASSWORDLESS_FLOW
    routed: str  # TRUE | FALSE | UNKNOWN
    setting: str
    connection: str | None = None  # the sms connection's name (passwordless)
    checked: bool = True  # among spec.auth0.flows (PhoneRouting depends on it)
    mfa_policy: str | None = None  # the MFA flow's: see mfa_policy()

    def as_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"flow": self.flow, "routed": self.routed, "setting": self.setting,
                                  "checked": self.checked}
        if self.connection is not None:
            status["connection"] = self.connection
        if self.mfa_policy is not None:
            status["mfaPolicy"] = self.mfa_policy
        return status


def passwordless_state(integration: Integration, observed: ObservedRouting,
                       connection: ObservedConnection) -> FlowState:
    """Where a passwordless login code of `connection` goes, from its options alone."""
    options = connection.options
    own = ("its custom SMS gateway (options.provider: sms_gateway, gateway_url "
           f"{options.get('gateway_url')!r})" if options.get("provider") == "sms_gateway"
           else "Twilio with its own credentials (options.provider: "
           f"{options.get('provider') or 'absent'})")
    flag = options.get(USE_PHONE_PROVIDER)

    def state(routed: str, setting: str) -> FlowState:
        return FlowState(PASSWORDLESS_FLOW, routed, setting, connection.name)

    if not wants_upe(integration):
        return state(FALSE, f"passwordless codes never run {integration} code (Auth0 runs it for "
                            "MFA only); they go through " + (
                                "the tenant phone provider" if observed.upe and flag is True else own)
                     + "; use integration phone-provider")
    if not connection.options_read:
        return state(UNKNOWN, _OPTIONS_UNREAD)
    if not observed.upe:
        return state(FALSE, "the tenant is off the Unified Phone Experience, so the connection "
                            f"sends through {own}; turn the experience on "
                            f"(phone_consolidated_experience: true) and set {_TOGGLE}")
    if flag is True:
        return state(TRUE, f"{_TOGGLE}: the tenant phone provider")
    if flag is False:
        return state(FALSE, f"options.{USE_PHONE_PROVIDER}: false: the connection sends through "
                            f"{own}; set {_TOGGLE}")
    return state(UNKNOWN, f"the connection does not say whether it uses the tenant phone provider "
                          f"(options.{USE_PHONE_PROVIDER} absent) and may send through {own}; set "
                          f"{_TOGGLE}")


def flow_states(integration: Integration, remaining: list[Problem], observed: ObservedRouting | None,
                flows: tuple[str, ...], voice: bool = False) -> list[FlowState]:
    """Every phone flow of the tenant we looked at, MFA first (its calls next, when the tenant
    offers them or the channel asks it to)."""
    path = ("the tenant phone provider custom (custom-phone-provider action)" if wants_upe(integration)
            else f"the MFA phone provider {PHONE_MESSAGE_HOOK} ({integration})")
    by_text = [p for p in remaining if p.reason != VOICE_MESSAGE_TYPE_MISSING]
    mfa = FlowState(MFA_FLOW, FALSE if by_text else TRUE, by_text[0].message if by_text else path,
                    checked=MFA_FLOW in flows, mfa_policy=mfa_policy(observed))
    states = [mfa]
    by_call = [*remaining, *filter(None, [voice_gap(observed, voice)])]
    if voice or (observed is not None and VOICE in observed.message_types):
        states.append(FlowState(MFA_VOICE_FLOW, FALSE if by_call else TRUE,
                                by_call[0].message if by_call else f"calls placed by the relay through 8x8, via {path}",
                                checked=MFA_FLOW in flows))
    connections = observed.connections if observed is not None and observed.connections else ()
    return [*states, *(replace(passwordless_state(integration, observed, c),  # type: ignore[arg-type]
                               checked=PASSWORDLESS_FLOW in flows) for c in connections)]


@dataclass(frozen=True)
class RoutingVerdict:
    ok: bool
    reason: str
    message: str
    # Settings the operator changed: status key -> the value before (restored on removal).
    changed: Mapping[str, Any] = field(default_factory=dict)
    unknown: bool = False  # not ok because a flow could not be found out (never True then)
    flows: tuple[FlowState, ...] = ()


def verdict(integration: Integration, name: str, domain: str, remaining: list[Problem],
            changed: Mapping[str, Any], flows: tuple[str, ...] = (MFA_FLOW,),
            observed: ObservedRouting | None = None, voice: bool = False) -> RoutingVerdict:
    """PhoneRouting: True only when every flow the channel is for reaches `name`. `voice`: the
    channel places calls (spec.voice)."""
    states = tuple(flow_states(integration, remaining, observed, flows, voice))
    gap = voice_gap(observed, voice)
    if gap is not None and MFA_FLOW in flows and not remaining:
        return RoutingVerdict(False, gap.reason, f"Auth0 tenant {domain} will not reach {name!r} for "
                              f"every MFA code: {gap.message}", changed, flows=states)
    if remaining and MFA_FLOW in flows:
        fix = "; ".join(p.message for p in remaining)
        hint = ("" if unfixable(remaining)
                else " (or set spec.auth0.manageRouting: true to let the operator do it)")
        return RoutingVerdict(False, remaining[0].reason,
                              f"Auth0 tenant {domain} will not send OTPs through {name!r}: {fix}{hint}",
                              changed, flows=states)
    checked = [s for s in states if s.checked and s.flow == PASSWORDLESS_FLOW]
    moves = connection_problems(integration, observed, flows) if observed is not None else []
    hint = ("; or set spec.auth0.manageRouting: true to let the operator set it"
            if moves and not unfixable(moves) else "")
    for routed, reason in ((FALSE, PASSWORDLESS_NOT_ROUTED), (UNKNOWN, PASSWORDLESS_UNKNOWN)):
        stuck = [s for s in checked if s.routed == routed]
        if stuck:
            which = "; ".join(f"connection {s.connection!r}: {s.setting}" for s in stuck)
            return RoutingVerdict(False, reason, (
                f"Auth0 tenant {domain}: passwordless SMS login codes "
                f"{'do not reach' if routed == FALSE else 'may not reach'} {name!r}: {which} ("
                f"or leave passwordless out of spec.auth0.flows if these codes are meant to go "
                f"elsewhere{hint})"), changed, unknown=routed == UNKNOWN, flows=states)
    path = ("the custom phone provider's custom-phone-provider action" if wants_upe(integration)
            else f"phone-message-hook ({integration})")
    mfa = "MFA SMS and calls" if voice and observed is not None and VOICE in observed.message_types else "MFA SMS"
    what = " and ".join([mfa] * (MFA_FLOW in flows) + [
        f"passwordless codes of {', '.join(repr(s.connection) for s in checked)}"] * bool(checked))
    return RoutingVerdict(True, ROUTED, f"{what or 'MFA SMS'} of {domain} go through {path} {name!r}",
                          changed, flows=states)


def restore_plan(changed: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Settings to put back on removal, in an order Auth0 accepts (connections while the
    tenant provider still serves them, legacy provider while off the Unified Phone Experience,
    the experience flag last)."""
    order = (CONNECTIONS_KEY, MESSAGE_TYPES_KEY, SMS_FACTOR_KEY, SELECTED_PROVIDER_KEY, UPE_KEY)
    return [(key, changed[key]) for key in order if changed and key in changed]
