"""One emulated tenant: its stores, tokens, rate limit, faults and request log."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .actions import ActionStore
from .clock import Clock, wall_clock
from .config import RateLimit, TenantConfig
from .hooks import HookStore
from .providers import ProviderStore
from .ratelimit import TokenBucket
from .tokens import TokenIssuer

PHONE_TRIGGERS = ("custom-phone-provider", "send-phone-message", "hook")


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


class Tenant:
    def __init__(self, config: TenantConfig, port: int, clock: Clock = wall_clock) -> None:
        self.config = config
        self.name = config.name
        self.port = port
        self.domain = f"localhost:{port}"
        self.clock = clock
        self.tokens = TokenIssuer(self.domain, config.clients, config.token_lifetime_seconds)
        self.actions = ActionStore(clock, config.build_seconds)
        self.hooks = HookStore()
        self.providers = ProviderStore(
            config.name, clock,
            lambda: bool(self.actions.deployed_for_trigger("custom-phone-provider")))
        self.latency_ms = config.latency_ms
        self.rate_limit = config.rate_limit
        self.bucket = TokenBucket(config.rate_limit.capacity,
                                  config.rate_limit.refill_per_second, clock)
        self.runner_timeout_seconds = config.runner_timeout_seconds
        self.requests: list[LoggedRequest] = []
        self.fail_status: int | None = None
        self.fail_remaining = 0

    def set_rate_limit(self, limit: RateLimit) -> None:
        self.rate_limit = limit
        self.bucket = TokenBucket(limit.capacity, limit.refill_per_second, self.clock)

    def fail_next(self, status: int, count: int) -> None:
        self.fail_status, self.fail_remaining = status, count

    def take_fault(self) -> int | None:
        if self.fail_remaining <= 0 or self.fail_status is None:
            return None
        self.fail_remaining -= 1
        return self.fail_status

    # ---- phone messages ------------------------------------------------------------------
    def plan(self, trigger: str | None) -> list[Execution]:
        """What Auth0 would run for a phone message, in order (empty: no handler).

        With no trigger given: the tenant's enabled ``custom`` phone provider wins, then the
        send-phone-message action chain, then an enabled send-phone-message hook."""
        if trigger is None:
            for candidate in PHONE_TRIGGERS:
                found = self.plan(candidate)
                if found:
                    return found
            return []
        if trigger == "custom-phone-provider":
            provider = self.providers.active()
            if provider is None or provider.name != "custom" or provider.disabled:
                return []
            bound = self._bound_actions(trigger)
            if bound:
                return bound
            # Whether this trigger has bindings is unconfirmed: without any, the most recently
            # deployed action supporting it runs (as an entity-bound trigger would).
            deployed = self.actions.deployed_for_trigger(trigger)
            return [self._execution(deployed[0], trigger)] if deployed else []
        if trigger == "send-phone-message":
            return self._bound_actions(trigger)
        if trigger == "hook":
            hook = self.hooks.enabled_for("send-phone-message")
            if hook is None:
                return []
            return [Execution("hook", "send-phone-message", hook.name, hook.id, hook.script,
                              dict(hook.secrets))]
        raise ValueError(f"unknown trigger {trigger!r}; expected one of {PHONE_TRIGGERS}")

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
                "all_changes_deployed": action.draft_matches(deployed),
                "deployed_version": deployed.number if deployed else None,
                "versions": [{"id": ver.id, "number": ver.number,
                              "deployed": ver.number == action.deployed_number,
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
            "guardian_phone_provider": self.providers.guardian_phone_provider,
        }

    def requests_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.requests]
