"""Tenant settings and the MFA (Guardian) phone factor: what decides where phone messages go.

A new tenant is on the Unified Phone Experience (``phone_consolidated_experience: true``) with
every MFA factor off and no message types, as a new real tenant is (deploy-cli recordings).

Tenant generations, as real tenants differ:
- ``phone_consolidated_experience`` may be absent from ``GET /tenants/settings`` (a real tenant
  recorded by auth0-deploy-cli leaves it out and answers 200 on the legacy selected-provider
  endpoint). Absent here means: the legacy path is live when the tenant has the
  ``legacy_mfa_phone_provider`` flag, the Unified Phone Experience otherwise. Auth0 documents no
  default; this is the reading that matches the recording and the flag's meaning.
- The legacy Guardian phone endpoints (``/guardian/factors/phone/selected-provider``) are gated by
  the tenant flag ``legacy_mfa_phone_provider`` (go-auth0 PRs #714/#715), not by the experience
  setting: without the flag they answer 403 ``legacy_mfa_phone_provider_not_allowed``. Whether a
  tenant *with* the flag answers them while on the Unified Phone Experience is not documented;
  the emulator answers (the flag is what gates them), and routes nothing through them while the
  experience is on.
- The flags (and ``legacy_passwordless_phone_provider``) are set through ``PATCH
  /api/v2/migrations``, which client-credentials tokens cannot call (docs-v2
  configure-unified-phone: new tenants need Auth0 Support). Here only the admin API (Auth0
  Support, or a tenant that is simply old) sets them; ``PATCH /tenants/settings`` refuses them.
"""

from __future__ import annotations

from typing import Any, Callable

from . import validation as v
from .errors import ApiError, conflict, payload_error

FACTOR_NAMES = ("sms", "push-notification", "otp", "email", "duo", "webauthn-roaming",
                "webauthn-platform", "recovery-code")
MESSAGE_TYPES = ("sms", "voice")
SELECTED_PROVIDERS = ("auth0", "twilio", "phone-message-hook")
# MFA message type -> phone provider delivery method.
DELIVERY_METHOD_OF = {"sms": "text", "voice": "voice"}
LEGACY_PROVIDER_NOT_ALLOWED = ApiError(
    403, "Insufficient privileges to use this deprecated feature. To handle Phone "
    "Provider/Templates refer to Tenant Phone Settings", "legacy_mfa_phone_provider_not_allowed")
MESSAGE_TYPE_NOT_SUPPORTED = "Message Type is not supported by the configured phone provider"
# Tenant settings the emulator keeps beyond phone routing (accepted and echoed back).
_DEFAULT_SETTINGS: dict[str, Any] = {
    "enabled_locales": ["en"],
    "flags": {"enable_sso": True, "universal_login": True, "revoke_refresh_token_grant": False,
              "disable_clickjack_protection_headers": False},
    "friendly_name": "",
    "idle_session_lifetime": 72,
    "picture_url": "",
    "sandbox_version": "22",
    "session_lifetime": 168,
    "support_email": "",
    "support_url": "",
    "sandbox_versions_available": ["22", "18"],
}


# The MFA policies a tenant may set (GET/PUT /guardian/policies; `[]`: MFA is prompted only
# where an Action asks for it, the Dashboard's "Never"). Auth0 documents the values, not whether
# both may be set at once: at most one is the stricter reading.
MFA_POLICIES = ("all-applications", "confidence-score")

# Tenant flags only Auth0 (PATCH /api/v2/migrations, not open to M2M tokens) can set.
LEGACY_FLAGS = ("legacy_mfa_phone_provider", "legacy_passwordless_phone_provider")


class PhoneSettings:
    """``provider_methods`` returns the delivery methods of the tenant's phone provider (None
    when it has none): under UPE, MFA message types must be among them. ``upe`` None: the
    tenant leaves ``phone_consolidated_experience`` out of its settings."""

    def __init__(self, upe: bool | None, provider_methods: Callable[[], list[str] | None],
                 legacy_mfa: bool = False, legacy_passwordless: bool = False) -> None:
        self.settings: dict[str, Any] = dict(_DEFAULT_SETTINGS)
        if upe is not None:
            self.settings["phone_consolidated_experience"] = upe
        self.legacy = {LEGACY_FLAGS[0]: legacy_mfa, LEGACY_FLAGS[1]: legacy_passwordless}
        self.factors = {name: False for name in FACTOR_NAMES}
        self.message_types: list[str] = []
        self.selected_provider = "auth0"
        self.mfa_policies: list[str] = []
        self._provider_methods = provider_methods

    @property
    def legacy_mfa(self) -> bool:
        return self.legacy[LEGACY_FLAGS[0]]

    @property
    def upe(self) -> bool:
        """The experience in effect (see the module docstring for an absent setting)."""
        if "phone_consolidated_experience" in self.settings:
            return bool(self.settings["phone_consolidated_experience"])
        return not self.legacy_mfa

    # ---- /tenants/settings ---------------------------------------------------------------
    def settings_json(self, fields: list[str] | None = None) -> dict[str, Any]:
        if fields:
            return {k: self.settings[k] for k in fields if k in self.settings}
        return dict(self.settings)

    def patch_settings(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise payload_error("Expected type object but found type " + type(body).__name__)
        if "phone_consolidated_experience" in body:
            v.boolean(body["phone_consolidated_experience"], "phone_consolidated_experience")
        flags = body.get("flags")
        for flag in LEGACY_FLAGS:
            # The real answer's wording is not documented; refusing is the stricter reading.
            if isinstance(flags, dict) and flag in flags:
                raise payload_error(f"Additional properties not allowed: {flag} (flags)")
        for key, value in body.items():
            if key == "flags" and isinstance(value, dict):
                self.settings["flags"] = {**self.settings.get("flags", {}), **value}
            else:
                self.settings[key] = value
        return self.settings_json()

    # ---- /guardian/factors ---------------------------------------------------------------
    def factors_json(self) -> list[dict[str, Any]]:
        return [{"name": name, "enabled": enabled, "trial_expired": False}
                for name, enabled in self.factors.items()]

    def set_factor(self, name: str, body: Any) -> dict[str, bool]:
        if name not in self.factors:
            raise ApiError(404, "Not Found")
        data = v.body_object(body, frozenset({"enabled"}), required=("enabled",))
        self.factors[name] = v.boolean(data["enabled"], "enabled")
        return {"enabled": self.factors[name]}

    def set_message_types(self, body: Any) -> list[str]:
        data = v.body_object(body, frozenset({"message_types"}), required=("message_types",))
        types = v.array(data["message_types"], "message_types")
        for kind in types:
            if kind not in MESSAGE_TYPES:
                raise payload_error(f"No enum match for: {kind} (message_types)")
        if self.upe and types:
            methods = self._provider_methods() or []
            if any(DELIVERY_METHOD_OF[kind] not in methods for kind in types):
                raise conflict(MESSAGE_TYPE_NOT_SUPPORTED)
        self.message_types = list(dict.fromkeys(types))
        return self.message_types

    def get_selected_provider(self) -> str:
        if not self.legacy_mfa:
            raise LEGACY_PROVIDER_NOT_ALLOWED
        return self.selected_provider

    def select_provider(self, body: Any) -> str:
        if not self.legacy_mfa:
            raise LEGACY_PROVIDER_NOT_ALLOWED
        data = v.body_object(body, frozenset({"provider"}), required=("provider",))
        provider = v.string(data["provider"], "provider")
        if provider not in SELECTED_PROVIDERS:
            raise payload_error(f"No enum match for: {provider} (provider)")
        self.selected_provider = provider
        return provider

    # ---- /guardian/policies -------------------------------------------------------------
    def set_mfa_policies(self, body: Any) -> list[str]:
        policies = v.array(body, "policies")
        for policy in policies:
            if policy not in MFA_POLICIES:
                raise payload_error(f"No enum match for: {policy}")
        if len(set(policies)) > 1:
            raise payload_error("Array is too long (1 maximum)")
        self.mfa_policies = list(dict.fromkeys(policies))
        return self.mfa_policies

    # ---- what a person set in the Dashboard (admin API), validated only for type ----------
    def preset(self, data: dict[str, Any]) -> None:
        """Also what only Auth0 sets: the legacy flags, and an absent experience setting
        (``phone_consolidated_experience: None``)."""
        if "phone_consolidated_experience" in data:
            if data["phone_consolidated_experience"] is None:
                self.settings.pop("phone_consolidated_experience", None)
            else:
                self.settings["phone_consolidated_experience"] = bool(
                    data["phone_consolidated_experience"])
        for flag in LEGACY_FLAGS:
            if flag in data:
                self.legacy[flag] = bool(data[flag])
        if "sms_factor" in data:
            self.factors["sms"] = bool(data["sms_factor"])
        if "message_types" in data:
            types = list(data["message_types"])
            if any(kind not in MESSAGE_TYPES for kind in types):
                raise ValueError(f"message_types must be among {MESSAGE_TYPES}")
            self.message_types = types
        if "mfa_policies" in data:
            self.set_mfa_policies(list(data["mfa_policies"]))
        if "selected_provider" in data:
            if data["selected_provider"] not in SELECTED_PROVIDERS:
                raise ValueError(f"selected_provider must be one of {SELECTED_PROVIDERS}")
            self.selected_provider = str(data["selected_provider"])

    def state(self) -> dict[str, Any]:
        return {"phone_consolidated_experience": self.upe,
                "phone_consolidated_experience_set": "phone_consolidated_experience" in self.settings,
                **self.legacy, "sms_factor": self.factors["sms"],
                "message_types": list(self.message_types),
                "selected_provider": self.selected_provider, "mfa_policies": list(self.mfa_policies)}
