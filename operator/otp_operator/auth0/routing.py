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
REASONS = (WRONG_EXPERIENCE, GUARDIAN_PROVIDER, SMS_FACTOR_DISABLED, SMS_MESSAGE_TYPE_MISSING)


@dataclass(frozen=True)
class ObservedRouting:
    upe: bool
    sms_factor: bool
    message_types: tuple[str, ...]
    selected_provider: str | None  # None under UPE (the legacy endpoint answers 403 there)


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str  # names the exact setting and the fix
    key: str  # status key of the setting
    wanted: Any  # the value that fixes it


def wants_upe(integration: Integration) -> bool:
    return integration == "phone-provider"


def problems(integration: Integration, observed: ObservedRouting) -> list[Problem]:
    """What keeps MFA SMS from reaching `integration`, in the order they must be fixed."""
    found: list[Problem] = []
    if wants_upe(integration) and not observed.upe:
        found.append(Problem(
            WRONG_EXPERIENCE,
            "the tenant is off the Unified Phone Experience (tenant setting "
            "phone_consolidated_experience: false), so MFA SMS never reach the custom phone "
            "provider: turn it on (PATCH /api/v2/tenants/settings "
            '{"phone_consolidated_experience": true}) or use integration send-phone-message',
            UPE_KEY, True))
    if not wants_upe(integration) and observed.upe:
        found.append(Problem(
            WRONG_EXPERIENCE,
            "the tenant uses the Unified Phone Experience (tenant setting "
            f"phone_consolidated_experience: true), which never runs {integration} code for "
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
    return RoutingVerdict(False, remaining[0].reason,
                          f"Auth0 tenant {domain} will not send OTPs through {name!r}: {fix} "
                          "(or set spec.auth0.manageRouting: true to let the operator do it)",
                          changed)


def restore_plan(changed: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """Settings to put back on removal, in an order Auth0 accepts (legacy provider while off
    the Unified Phone Experience, the experience flag last)."""
    order = (MESSAGE_TYPES_KEY, SMS_FACTOR_KEY, SELECTED_PROVIDER_KEY, UPE_KEY)
    return [(key, changed[key]) for key in order if changed and key in changed]
