"""Passwordless SMS connections (``strategy: sms``): where a passwordless login code goes.

A connection's ``options`` decide it (docs-v2 passwordless SMS, the Management API OAS):
- ``provider`` absent or ``twilio``: Twilio, with the connection's own ``twilio_sid`` /
  ``twilio_token`` / ``from`` or ``messaging_service_sid``;
- ``provider: sms_gateway``: a custom HTTP gateway (``gateway_url``, a HS256 JWT from
  ``gateway_authentication``; the OAS marks that deprecated);
- on a tenant with the Unified Phone Experience, ``use_phone_provider: true`` (the Dashboard's
  "Use Tenant-Level Messaging Provider"; reported by users, not documented) sends it through the
  tenant phone provider instead.
Not documented: what a UPE tenant does with a connection that leaves ``use_phone_provider`` out.
The stricter reading here: the connection's own provider (so our code does not run).

``PATCH /connections/{id}`` with ``options`` replaces the whole options object, as Auth0
documents. Since the connection-options scope migration (end of life 2025-07-08) the answers
of ``GET /connections`` and ``GET``/``PATCH /connections/{id}`` carry ``options`` only for a
caller with ``read:connections_options``, and a PATCH whose body has ``options`` needs
``update:connections_options``. Option values that are credentials (``twilio_token``, the
gateway secret) are answered back: auth0-deploy-cli's export (``AUTH0_EXPORT_SECRETS``) writes
the real connection secrets it read from these endpoints.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any

from . import validation as v
from .errors import insufficient_scope, not_found, payload_error

SMS_PROVIDERS = ("twilio", "sms_gateway")
# Since the options-scope migration, a caller without it gets connections without `options`.
READ_OPTIONS_SCOPE, UPDATE_OPTIONS_SCOPE = "read:connections_options", "update:connections_options"
_UPDATE_KEYS = frozenset({"options", "display_name", "enabled_clients", "is_domain_connection",
                          "show_as_button", "realms", "metadata"})


@dataclass
class Connection:
    id: str
    name: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    enabled_clients: list[str] = field(default_factory=list)

    def to_json(self, scopes: frozenset[str]) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id, "name": self.name, "strategy": self.strategy,
            "enabled_clients": list(self.enabled_clients), "is_domain_connection": False,
            "realms": [self.name]}
        if READ_OPTIONS_SCOPE in scopes:
            answer["options"] = copy.deepcopy(self.options)
        return answer

    def uses_tenant_provider(self, upe: bool) -> bool:
        return upe and self.options.get("use_phone_provider") is True

    def own_provider(self) -> str:
        return "sms_gateway" if self.options.get("provider") == "sms_gateway" else "twilio"


def _connection_id() -> str:
    return "con_" + "".join(random.choices(string.ascii_letters + string.digits, k=16))


def _sms_options(options: Any) -> dict[str, Any]:
    if not isinstance(options, dict):
        raise payload_error("Expected type object but found type " + type(options).__name__ + " (options)")
    provider = options.get("provider")
    if provider is not None and provider not in SMS_PROVIDERS:
        raise payload_error(f"No enum match for: {provider} (options.provider)")
    if provider == "sms_gateway" and not isinstance(options.get("gateway_url"), str):
        raise payload_error("Missing required property: gateway_url (options)")
    if "use_phone_provider" in options:
        v.boolean(options["use_phone_provider"], "options.use_phone_provider")
    return dict(options)


class ConnectionStore:
    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}

    def get(self, connection_id: str) -> Connection:
        found = self.connections.get(connection_id)
        if found is None:
            raise not_found("The connection does not exist", "inexistent_connection")
        return found

    def by_name(self, name: str) -> Connection | None:
        return next((c for c in self.connections.values() if c.name == name), None)

    def listed(self, strategies: list[str]) -> list[Connection]:
        return [c for c in self.connections.values() if not strategies or c.strategy in strategies]

    def update(self, connection_id: str, body: Any, scopes: frozenset[str]) -> Connection:
        found = self.get(connection_id)
        data = v.body_object(body, _UPDATE_KEYS)
        if "options" in data and UPDATE_OPTIONS_SCOPE not in scopes:
            raise insufficient_scope(UPDATE_OPTIONS_SCOPE)
        if "options" in data:
            options = _sms_options(data["options"]) if found.strategy == "sms" else dict(data["options"])
            found.options = options  # the whole object is replaced, as Auth0 documents
        if "enabled_clients" in data:
            found.enabled_clients = [v.string(c, "enabled_clients") for c in v.array(data["enabled_clients"], "enabled_clients")]
        return found

    def preset(self, connections: Any) -> None:
        """What a person created in the Dashboard: [{name, options}] (sms), replacing the set."""
        if not isinstance(connections, list):
            raise ValueError("connections must be a list")
        self.connections.clear()
        for item in connections:
            name = str(item["name"])
            connection = Connection(_connection_id(), name, "sms", _sms_options(item.get("options") or {}))
            self.connections[connection.id] = connection
