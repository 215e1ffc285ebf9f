"""One emulated tenant: its stores, tokens, rate limit, faults and request log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .actions import ActionStore
from .clock import Clock, wall_clock
from .config import RateLimit, TenantConfig
from .connections import READ_OPTIONS_SCOPE, ConnectionStore
from .errors import ApiError
from .events import PhoneMessage
from .guardian import PhoneSettings
from .hooks import HookStore
from .logevents import SentCode, new_transaction, sent_event, used_event
from .logstreams import LogStreamStore
from .providers import ProviderStore
from .ratelimit import TokenBucket
from .tokens import TokenIssuer

PHONE_TRIGGERS = ("custom-phone-provider", "send-phone-message", "hook")
MFA_MESSAGE_TYPES = ("otp_verify", "otp_enroll")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int
    client_id: str | None
    query: str = ""


@dataclass(frozen=True)
class Execution:
    """One piece of registered code to run for a phone message."""

    kind: str  # "action" | "hook"
    trigger: str
    name: str
    id: str
    code: str
    secrets: dict[str, str]


@dataclass(frozen=True)
class Route:
    """Where a phone message goes: the code to run in order, or why nothing of ours runs."""

    runs: list[Execution]
    reason: str


@dataclass(frozen=True)
class Fault:
    status: int
    method: str | None = None
    path_suffix: str | None = None
    error_code: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path_suffix is None or path.endswith(self.path_suffix)))


class Tenant:
    def __init__(self, config: TenantConfig, port: int, clock: Clock = wall_clock) -> None:
        self.config = config
        self.name = config.name
        self.port = port
        self.domain = f"localhost:{port}"
        self.clock = clock
        self.tokens = TokenIssuer(self.domain, config.clients, config.token_lifetime_seconds)
        self.actions = ActionStore(clock, config.build_seconds, config.deploy_seconds)
        self.hooks = HookStore()
        self.connections = ConnectionStore()
        self.providers = ProviderStore(
            config.name, clock,
            lambda: bool(self.actions.deployed_for_trigger("custom-phone-provider")))
        self.phone = PhoneSettings(config.phone_consolidated_experience,
                                   self.providers.delivery_methods,
                                   legacy_mfa=config.legacy_mfa_phone_provider,
                                   legacy_passwordless=config.legacy_passwordless_phone_provider)
        self.latency_ms = config.latency_ms
        self.rate_limit = config.rate_limit
        self.bucket = TokenBucket(config.rate_limit.capacity,
                                  config.rate_limit.refill_per_second, clock)
        self.runner_timeout_seconds = config.runner_timeout_seconds
        self.requests: list[LoggedRequest] = []
        self.in_flight: list[str] = []  # "METHOD /path" of requests received, not yet answered
        self.fault: Fault | None = None
        self.fail_remaining = 0
        self.log_streams = LogStreamStore()
        self.logs: list[dict[str, Any]] = []  # the tenant log, oldest first
        self.codes: list[SentCode] = []  # phone messages logged as sent (or failed), for use_code

    # ---- tenant log ----------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        """Write ``event`` to the tenant log and queue it on every log stream that wants it."""
        self.logs.append(event)
        self.log_streams.publish(event)

    def log_phone_message(self, message: PhoneMessage, outcome: str,
                          reason: str | None) -> SentCode | None:
        """Log what a real tenant logs after running our code for ``message`` (logevents);
        the logged message, or None when a real tenant logs nothing of it."""
        if outcome == "no-handler":
            return None  # nothing of ours ran: Auth0's own delivery is not modelled
        if message.connection is None and message.message_type not in MFA_MESSAGE_TYPES:
            return None
        sent = outcome == "success"
        if message.connection is not None and not sent:
            return None
        connection = self.connections.by_name(message.connection) if message.connection else None
        code = SentCode(message, sent, new_transaction(), getattr(connection, "id", None))
        self.codes.append(code)
        self.emit(sent_event(self.name, self.clock(), code, outcome, reason))
        return code

    def use_code(self, recipient: str | None, connection: str | None, ok: bool,
                 transaction_id: str | None = None) -> dict[str, Any]:
        """The user enters the code of the message logged under ``transaction_id``, or else of
        the latest logged to ``recipient`` (any when None) for ``connection`` (None: MFA): right
        (``ok``) or wrong. A code that never went out cannot be entered right, nor one already
        used (both 409, the stricter choice)."""
        if transaction_id is not None:
            found = [c for c in self.codes if c.transaction_id == transaction_id]
        else:
            found = [c for c in self.codes if c.message.connection == connection
                     and (recipient is None or c.message.recipient == recipient)]
        if not found:
            raise ApiError(404, f"no phone message was logged for {recipient or 'anyone'} "
                                f"({'connection ' + connection if connection else 'MFA'})")
        code = found[-1]
        if ok and not code.sent:
            raise ApiError(409, "that message was never delivered: there is no code to enter")
        if ok and code.used:
            raise ApiError(409, "that code was already used")
        event = used_event(self.name, self.clock(), code, ok)
        code.used = code.used or ok
        self.emit(event)
        return event

    def set_rate_limit(self, limit: RateLimit) -> None:
        self.rate_limit = limit
        self.bucket = TokenBucket(limit.capacity, limit.refill_per_second, self.clock)

    def fail_next(self, fault: Fault, count: int) -> None:
        self.fault, self.fail_remaining = fault, count

    def take_fault(self, method: str, path: str) -> Fault | None:
        if self.fail_remaining <= 0 or self.fault is None or not self.fault.matches(method, path):
            return None
        self.fail_remaining -= 1
        return self.fault

    # ---- phone messages ------------------------------------------------------------------
    def route(self, message: PhoneMessage) -> Route:
        """What a real tenant runs for this phone message, in order; nothing when the routing
        does not lead to registered code (reference: Auth0's phone-routing rules)."""
        if message.connection is not None:
            return self._route_passwordless(message)
        if message.message_type in MFA_MESSAGE_TYPES:
            if not self.phone.factors["sms"]:
                return Route([], "the MFA SMS factor is disabled (guardian/factors/sms)")
            kind = "voice" if message.delivery_method == "voice" else "sms"
            if kind not in self.phone.message_types:
                return Route([], f"MFA phone message types {self.phone.message_types} do not "
                                 f"include {kind!r}")
        if self.phone.upe:
            return self._route_unified(message)
        if message.message_type not in MFA_MESSAGE_TYPES:
            return Route([], "without the Unified Phone Experience only MFA messages run "
                             "phone-message hooks and send-phone-message actions")
        if not self.phone.legacy_mfa:
            # Not documented: what Auth0 sends off the experience without the legacy flag. The
            # stricter reading: the legacy Guardian provider (and so our code) is not used.
            return Route([], "the tenant is off the Unified Phone Experience but lacks the "
                             "legacy_mfa_phone_provider flag: the legacy Guardian phone provider "
                             "is not used")
        if self.phone.selected_provider != "phone-message-hook":
            return Route([], "the tenant is off the Unified Phone Experience and the Guardian "
                             f"phone provider is {self.phone.selected_provider!r}, not "
                             "'phone-message-hook'")
        hook = self.hooks.enabled_for("send-phone-message")
        runs = [Execution("hook", "send-phone-message", hook.name, hook.id, hook.script,
                          dict(hook.secrets))] if hook else []
        runs += self._bound_actions("send-phone-message")
        if not runs:
            return Route([], "phone-message-hook is selected but no send-phone-message hook is "
                             "enabled and no send-phone-message action is bound")
        return Route(runs, "phone-message-hook: enabled hooks, then bound send-phone-message "
                           "actions")

    def _route_passwordless(self, message: PhoneMessage) -> Route:
        """A passwordless login code: the connection's options decide (connections.py)."""
        connection = self.connections.by_name(message.connection or "")
        if connection is None or connection.strategy != "sms":
            return Route([], f"no passwordless sms connection named {message.connection!r}")
        if connection.uses_tenant_provider(self.phone.upe):
            return self._route_unified(message)
        if connection.own_provider() == "sms_gateway":
            return Route([], f"connection {connection.name!r} sends through its custom SMS gateway "
                             f"{connection.options.get('gateway_url')!r}")
        return Route([], f"connection {connection.name!r} sends through Twilio with its own "
                         "credentials")

    def _route_unified(self, message: PhoneMessage) -> Route:
        provider = self.providers.active()
        if provider is None:
            return Route([], "the tenant (Unified Phone Experience) has no phone provider")
        if provider.disabled:
            return Route([], "the tenant's phone provider is disabled")
        if provider.name != "custom":
            return Route([], f"the tenant's phone provider is {provider.name!r}: Auth0 sends "
                             "the message itself")
        if message.delivery_method not in provider.configuration.get("delivery_methods", []):
            return Route([], f"the phone provider does not offer {message.delivery_method!r}")
        runs = self._bound_actions("custom-phone-provider")
        if not runs:
            return Route([], "the custom phone provider has no deployed action bound to "
                             "custom-phone-provider")
        return Route(runs, "Unified Phone Experience: custom provider")

    def _bound_actions(self, trigger: str) -> list[Execution]:
        runs = []
        for binding in self.actions.bindings.get(trigger, []):
            action = self.actions.actions.get(binding.action_id)
            if action is not None and action.deployed() is not None:
                runs.append(self._execution(action, trigger))
        return runs

    @staticmethod
    def _execution(action: Any, trigger: str) -> Execution:
        version = action.deployed()
        return Execution("action", trigger, action.name, action.id, version.code,
                         {k: s.value for k, s in version.secrets.items()})

    # ---- dumps ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything a test may assert on; secret values are never included."""
        now = self.clock()
        actions = []
        for action in self.actions.actions.values():
            deployed = action.deployed()
            actions.append({
                "id": action.id,
                "name": action.name,
                "supported_triggers": action.supported_triggers,
                "code": action.code,
                "runtime": action.runtime,
                "secrets": sorted(action.secrets),
                "status": action.status(now),
                "all_changes_deployed": action.all_changes_deployed(),
                "deployed_version": deployed.number if deployed else None,
                "versions": [{"id": ver.id, "number": ver.number,
                              "deployed": deployed is not None and ver.number == deployed.number,
                              "code": ver.code, "secrets": sorted(ver.secrets)}
                             for ver in action.versions],
            })
        bindings = {
            trigger: [{"id": b.id, "action_id": b.action_id,
                       "action_name": getattr(self.actions.actions.get(b.action_id), "name",
                                              None),
                       "display_name": b.display_name} for b in chain]
            for trigger, chain in self.actions.bindings.items()
        }
        return {
            "name": self.name,
            "domain": self.domain,
            "actions": actions,
            "bindings": bindings,
            "hooks": [{**h.to_json(), "secrets": sorted(h.secrets)}
                      for h in self.hooks.hooks.values()],
            "phone_providers": [self.providers.to_json(p)
                                for p in self.providers.providers.values()],
            "phone": self.phone.state(),
            "connections": [c.to_json(frozenset({READ_OPTIONS_SCOPE}))
                            for c in self.connections.connections.values()],
            "in_flight": list(self.in_flight),
            "log_streams": self.log_streams.state(),
        }

    def requests_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.requests]
