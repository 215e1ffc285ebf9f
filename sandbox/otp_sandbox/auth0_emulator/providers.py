"""The tenant's phone provider (one per tenant) and the MFA SMS provider selection."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from . import validation as v
from .clock import Clock, iso
from .errors import bad_request, conflict, not_found, payload_error

PROVIDER_NAMES = ("twilio", "custom")
DELIVERY_METHODS = ("text", "voice")
NEEDS_DEPLOYED_ACTION = (
    "A deployed action for the 'custom-phone-provider' trigger is required to use the "
    "'custom' phone provider."
)
# Auth0 reuses the custom email provider's code for this (sic).
NEEDS_DEPLOYED_ACTION_CODE = "custom_email_provider_deployed_action_not_found"
_KEYS = frozenset({"name", "disabled", "configuration", "credentials"})


@dataclass
class PhoneProvider:
    id: str
    name: str
    disabled: bool
    configuration: dict[str, Any]
    credentials: dict[str, Any]
    created_at: float
    updated_at: float


def _provider_id() -> str:
    return "pro_" + "".join(random.choices(string.ascii_letters + string.digits, k=22))


class ProviderStore:
    """``has_deployed_custom_action`` tells whether ``custom`` may be used right now."""

    def __init__(self, tenant: str, clock: Clock,
                 has_deployed_custom_action: Callable[[], bool]) -> None:
        self._tenant = tenant
        self._clock = clock
        self._has_action = has_deployed_custom_action
        self.providers: dict[str, PhoneProvider] = {}

    def get(self, provider_id: str) -> PhoneProvider:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise not_found("Phone provider not found", "phone_provider_not_found")
        return provider

    def active(self) -> PhoneProvider | None:
        return next(iter(self.providers.values()), None)

    def delivery_methods(self) -> list[str] | None:
        provider = self.active()
        return list(provider.configuration.get("delivery_methods", [])) if provider else None

    def create(self, body: Any) -> PhoneProvider:
        data = v.body_object(body, _KEYS, required=("name",))
        if self.providers:
            raise conflict("A phone provider is already configured for this tenant.",
                           "phone_provider_conflict")
        name = _name(data["name"])
        if "credentials" not in data:
            raise payload_error("Missing required property: credentials")
        configuration = data.get("configuration", {})
        credentials = data["credentials"]
        _check(name, configuration, credentials)
        disabled = v.boolean(data.get("disabled", False), "disabled")
        if name == "custom" and not self._has_action():
            raise bad_request(NEEDS_DEPLOYED_ACTION, NEEDS_DEPLOYED_ACTION_CODE)
        now = self._clock()
        provider = PhoneProvider(_provider_id(), name, disabled, configuration, credentials,
                                 now, now)
        self.providers[provider.id] = provider
        return provider

    def update(self, provider_id: str, body: Any) -> PhoneProvider:
        provider = self.get(provider_id)
        data = v.body_object(body, _KEYS)
        name = _name(data.get("name", provider.name))
        configuration = data.get("configuration", provider.configuration)
        credentials = data.get("credentials",
                               {} if name != provider.name else provider.credentials)
        _check(name, configuration, credentials)
        disabled = v.boolean(data.get("disabled", provider.disabled), "disabled")
        if name == "custom" and not disabled and not self._has_action():
            raise bad_request(NEEDS_DEPLOYED_ACTION, NEEDS_DEPLOYED_ACTION_CODE)
        provider.name, provider.configuration, provider.credentials = (
            name, configuration, credentials)
        provider.disabled = disabled
        provider.updated_at = self._clock()
        return provider

    def delete(self, provider_id: str) -> None:
        self.get(provider_id)
        del self.providers[provider_id]

    def to_json(self, provider: PhoneProvider) -> dict[str, Any]:
        return {
            "id": provider.id,
            "tenant": self._tenant,
            "name": provider.name,
            "channel": "phone",
            "disabled": provider.disabled,
            "configuration": provider.configuration,
            "created_at": iso(provider.created_at),
            "updated_at": iso(provider.updated_at),
        }


def _name(value: Any) -> str:
    name = v.string(value, "name")
    if name not in PROVIDER_NAMES:
        raise payload_error(f"No enum match for: {name} (name)")
    return name


def _check(name: str, configuration: Any, credentials: Any) -> None:
    if not isinstance(configuration, dict):
        raise payload_error("Expected type object (configuration)")
    if not isinstance(credentials, dict):
        raise payload_error("Expected type object (credentials)")
    methods = configuration.get("delivery_methods")
    if not isinstance(methods, list) or not methods:
        raise payload_error("Missing required property: delivery_methods (configuration)")
    for method in methods:
        if method not in DELIVERY_METHODS:
            raise payload_error(f"No enum match for: {method} (configuration.delivery_methods)")
    if name == "twilio":
        if not configuration.get("sid"):
            raise payload_error("Missing required property: sid (configuration)")
        if not credentials.get("auth_token"):
            raise payload_error("Missing required property: auth_token (credentials)")
    elif credentials:
        raise payload_error("Additional properties not allowed: "
                            + ",".join(sorted(credentials)) + " (credentials)")
