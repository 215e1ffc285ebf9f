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
from dataclasses import dataclass, field
from typing import Any

from .model import Integration

PHONE_MESSAGE_HOOK = "phone-message-hook"
SMS = "sms"

# Status keys (camelCase) of the settings the operator may change, with their Auth0 meaning.
UPE_KEY = "phoneConsolidatedExperience"
SMS_FACTOR_KEY = "smsFactor"
MESSAGE_TYPES_KEY = "messageTypes"
SELECTED_PROVIDER_KEY = "selectedProvider"

ROUTED = "Routed"
WRONG_EXPERIENCE = "WrongPhoneExperience"
GUARDIAN_PROVIDER = "GuardianProviderNotHook"
SMS_FACTOR_DISABLED = "SmsFactorDisabled"
SMS_MESSAGE_TYPE_MISSING = "SmsMessageTypeMissing"
LEGACY_NOT_ALLOWED = "LegacyPhoneProviderNotAllowed"
REASONS = (WRONG_EXPERIENCE, GUARDIAN_PROVIDER, SMS_FACTOR_DISABLED, SMS_MESSAGE_TYPE_MISSING,
           LEGACY_NOT_ALLOWED)
# Auth0's errorCode on the legacy Guardian phone endpoints of a tenant without the legacy flag.
LEGACY_NOT_ALLOWED_CODE = "legacy_mfa_phone_provider_not_allowed"


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


def wants_upe(integration: Integration) -> bool:
    return integration == "phone-provider"


def _experience_source(observed: ObservedRouting) -> str:
    if observed.experience_set:
        return f"tenant setting phone_consolidated_experience: {str(observed.upe).lower()}"
    answer = "200" if observed.legacy_allowed else f"403 {LEGACY_NOT_ALLOWED_CODE}"
    return ("the tenant settings leave phone_consolidated_experience out, and GET "
            f"/api/v2/guardian/factors/phone/selected-provider answered {answer}")


def problems(integration: Integration, observed: ObservedRouting) -> list[Problem]:
    """What keeps MFA SMS from reaching `integration`, in the order they must be fixed."""
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
    if SMS not in observed.message_types:
        wanted = [*observed.message_types, SMS]
        found.append(Problem(
            SMS_MESSAGE_TYPE_MISSING,
            f"the MFA phone message types {list(observed.message_types)} do not include 'sms': "
            f'PUT /api/v2/guardian/factors/phone/message-types {{"message_types": {wanted}}}'
            .replace("'", '"'),
            MESSAGE_TYPES_KEY, wanted))
    return found


def unfixable(found: list[Problem]) -> list[Problem]:
    """Problems no Management API call can fix: with manageRouting, nothing is changed then."""
    return [p for p in found if p.key is None]


def current_value(observed: ObservedRouting, key: str) -> Any:
    return {UPE_KEY: observed.upe, SMS_FACTOR_KEY: observed.sms_factor,
            MESSAGE_TYPES_KEY: list(observed.message_types),
            SELECTED_PROVIDER_KEY: observed.selected_provider}[key]


def delivery_methods(observed: ObservedRouting | None) -> tuple[str, ...]:
    """The custom provider's delivery methods: those the tenant's MFA message types need (under
    UPE Auth0 refuses message types the provider does not offer), text at least."""
    types = observed.message_types if observed else ()
    return ("text", "voice") if "voice" in types else ("text",)


@dataclass(frozen=True)
class RoutingVerdict:
    ok: bool
    reason: str
    message: str
    # Settings the operator changed: status key -> the value before (restored on removal).
    changed: Mapping[str, Any] = field(default_factory=dict)


def verdict(integration: Integration, name: str, domain: str, remaining: list[Problem],
            changed: Mapping[str, Any]) -> RoutingVerdict:
    if not remaining:
        path = ("the custom phone provider's custom-phone-provider action" if wants_upe(integration)
                else f"phone-message-hook ({integration})")
        return RoutingVerdict(True, ROUTED, f"MFA SMS of {domain} go through {path} {name!r}",
                              changed)
    fix = "; ".join(p.message for p in remaining)
    hint = ("" if unfixable(remaining)
            else " (or set spec.auth0.manageRouting: true to let the operator do it)")
    return RoutingVerdict(False, remaining[0].reason,
                          f"Auth0 tenant {domain} will not send OTPs through {name!r}: {fix}{hint}",
                          changed)


def restore_plan(changed: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Settings to put back on removal, in an order Auth0 accepts (legacy provider while off
    the Unified Phone Experience, the experience flag last)."""
    order = (MESSAGE_TYPES_KEY, SMS_FACTOR_KEY, SELECTED_PROVIDER_KEY, UPE_KEY)
    return [(key, changed[key]) for key in order if changed and key in changed]
