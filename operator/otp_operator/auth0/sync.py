"""`Auth0Sync`: read the tenant, decide with `model.py`, write only the difference.

Every ensure reads what it manages (that is the drift check), refuses before any write when
another channel holds the integration point, and returns a fingerprint of what it wrote; when
that fingerprint equals the recorded one and Auth0 still matches, no write request is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import routing
from .client import Connections, ManagementApi, RetryPolicy
from .errors import BUILD_FAILED, CONFLICT, FORBIDDEN, UNAVAILABLE, Auth0Error, RoutingRefused
from .gateway import Gateway
from .model import (
    ACTION_TRIGGERS,
    CUSTOM_PROVIDER,
    INTEGRATIONS,
    LOG_STREAM_SCOPES,
    PASSWORDLESS_FLOW,
    Auth0Credentials,
    Conflict,
    DesiredIntegration,
    DesiredLogStream,
    Integration,
    ObservedAction,
    ObservedBinding,
    ProviderPlan,
    Recorded,
    Target,
    binding_conflict,
    build_target,
    describe_holder,
    foreign_provider_binding,
    is_our_log_stream,
    is_ours,
    missing_scopes,
    pick_own_action,
    pick_own_hook,
    plan_action,
    plan_binding_add,
    plan_binding_removal,
    plan_hook,
    plan_log_stream,
    plan_provider,
    plan_provider_binding,
    recorded_matches,
    required_scopes,
    validate_name,
)
from .ratelimit import TenantRateLimit
from .routing import ObservedRouting, RoutingVerdict
from .templates import render

PROVIDER_TRIGGER = ACTION_TRIGGERS["phone-provider"][0]
# Polling a build or a deploy: the first look after a short wait (one that just started is never
# done at once), then less and less often, gentle on the tenant's rate limit (free tenants allow
# about two Management API requests per second; builds and deploys take seconds on Auth0).
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.3, 1.5, 2.0
# Right after our own deploy Auth0 may still answer as if the version were not deployed.
NOT_DEPLOYED_YET = "custom_email_provider_deployed_action_not_found"

log = logging.getLogger(__name__)

# Stores status.auth0.routingChanges (the whole map) where removal will find it; awaited with a
# setting's value before that setting is written (so before the next write), so a failure
# half-way always stays restorable.
RoutingRecorder = Callable[[Mapping[str, Any]], Awaitable[None]]
_recorder: ContextVar[RoutingRecorder | None] = ContextVar("routing_recorder", default=None)


@dataclass(frozen=True)
class SyncResult:
    integration: Integration
    action_id: str | None
    hook_id: str | None
    provider_id: str | None
    deployed_version: int | None
    secrets_hash: str
    fingerprint: str
    repaired: list[str] = field(default_factory=list)
    created: bool = False
    updated: list[str] = field(default_factory=list)
    writes: int = 0
    routing: RoutingVerdict | None = None

    def as_status(self) -> dict[str, Any]:
        """The dict for status.auth0 (camelCase), as `Recorded.from_status` reads it back."""
        status: dict[str, Any] = {"integration": self.integration}
        if self.action_id is not None:
            status["actionId"] = self.action_id
        if self.hook_id is not None:
            status["hookId"] = self.hook_id
        if self.provider_id is not None:
            status["providerId"] = self.provider_id
        if self.deployed_version is not None:
            status["deployedVersion"] = self.deployed_version
        status["secretsHash"] = self.secrets_hash
        status["fingerprint"] = self.fingerprint
        if self.routing is not None and self.routing.changed:
            status["routingChanges"] = dict(self.routing.changed)
        if self.routing is not None and self.routing.flows:
            status["routing"] = [flow.as_status() for flow in self.routing.flows]
        return status


# ConversionTracking reasons (the condition's, see LogStreamResult).
LOG_STREAM_ACTIVE = "LogStreamActive"
LOG_STREAMS_NOT_ALLOWED = "LogStreamsNotAllowed"
MISSING_SCOPE = "MissingScope"
LOG_STREAM_SUSPENDED = "LogStreamSuspended"
LOG_STREAM_CONFLICT = "LogStreamConflict"
LOG_STREAM_WAITING = "WaitingForRelay"
# Auth0's answer when the tenant's plan allows no more log streams.
TOO_MANY_STREAMS_CODE = "too_many_entities"


@dataclass(frozen=True)
class LogStreamResult:
    """One ensure of the channel's log stream: the ConversionTracking verdict and what changed
    (``updated`` names fields, never a token)."""

    ok: bool
    reason: str
    message: str
    stream_id: str | None = None
    created: bool = False
    updated: tuple[str, ...] = ()
    resumed: bool = False
    writes: int = 0


async def _first_read_alone(first: Callable[[], Awaitable[Any]], *rest: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run ``first``, then ``rest`` together; their results in order. A tenant that is rate-limiting
    us (or refusing the token) gets that one request and its retries, not every read at once with
    retries each; once it answered, the independent reads go out concurrently."""
    head = await first()
    return [head, *await asyncio.gather(*(read() for read in rest))]


@dataclass(frozen=True)
class _ProviderReads:
    """What the phone-provider sync read and decided before its first write."""
    own: ObservedAction | None
    bindings: list[ObservedBinding]
    routing: ObservedRouting
    provider_plan: ProviderPlan
    provider_id: str | None
    methods: tuple[str, ...]


@dataclass(frozen=True)
class AppliedAction:
    """What _apply_action left: our action, its deployed version, what it changed."""
    action_id: str
    version: int | None
    repaired: list[str]
    updated: list[str]
    created: bool
    deployed_now: bool  # a deploy happened just now (Auth0 may still answer 409 for a moment)


def _refuse(conflict: Conflict, domain: str) -> Auth0Error:
    return Auth0Error(CONFLICT, f"Auth0 tenant {domain}: {conflict.message}")


class Auth0Sync:
    """One per tenant and credentials; reusable across ensure/remove calls (keeps the token)."""

    def __init__(self, credentials: Auth0Credentials, *, policy: RetryPolicy | None = None,
                 build_timeout: float = 30.0, deploy_timeout: float = 60.0,
                 settle_timeout: float = 15.0, limit: TenantRateLimit | None = None,
                 connections: Connections | None = None) -> None:
        """`limit`: the tenant's shared rate limiter (Auth0Pool passes one per tenant);
        `connections`: the connection pool shared by every tenant (Auth0Pool's)."""
        self.credentials = credentials
        self.api = ManagementApi(credentials, policy, limit=limit, connections=connections)
        self.gateway = Gateway(self.api)
        self.build_timeout = build_timeout
        self.deploy_timeout = deploy_timeout
        # How long a 409 / "deployed action not found" right after our deploy is waited out.
        self.settle_timeout = settle_timeout
        # Keyed with the client secret, so status readers cannot test guesses of the values.
        self._hash_key = credentials.client_secret.encode()

    async def __aenter__(self) -> Auth0Sync:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.api.aclose()

    @property
    def requests(self) -> int:
        """Management API requests made so far (token requests excluded)."""
        return self.api.requests

    # --- public operations ---------------------------------------------------------------------

    async def ensure(self, desired: DesiredIntegration,
                     recorded: Mapping[str, Any] | None = None,
                     record_routing: RoutingRecorder | None = None) -> SyncResult:
        """`record_routing`: see RoutingRecorder; without it, changes are only in the result."""
        token = _recorder.set(record_routing)
        try:
            return await self._ensure(desired, recorded)
        finally:
            _recorder.reset(token)

    async def _ensure(self, desired: DesiredIntegration,
                      recorded: Mapping[str, Any] | None) -> SyncResult:
        self.api.add_secret(desired.signing_key)
        await self._check_scopes(desired.integration, "ensure", desired.manage_routing,
                                 PASSWORDLESS_FLOW in desired.flows)
        target = build_target(desired, render(desired.integration, desired.owner), self._hash_key)
        previous = Recorded.from_status(recorded)
        if previous is not None and previous.integration not in (None, desired.integration):
            previous = None  # the mode changed: nothing recorded applies to the new one
        writes_before = self.api.writes
        prepared = bool((recorded or {}).get("prepared"))  # what prepare() returned, not a status
        if desired.integration == "phone-provider":
            result = await self._ensure_phone_provider(target, previous, prepared)
        elif desired.integration == "send-phone-message":
            result = await self._ensure_send_phone_message(target, previous, prepared)
        else:
            result = await self._ensure_legacy_hook(target, previous)
        return _with_writes(result, self.api.writes - writes_before)

    async def prepare(self, desired: DesiredIntegration) -> dict[str, Any] | None:
        """While the relay rolls out: create our action and have it built and deployed but not
        bound, so that activating it (binding, provider) is all that is left once the relay
        serves. Only a new action: deploying one that is bound would make it serve at once.
        Returns what `ensure` then takes as recorded (None: nothing was prepared)."""
        if desired.integration == "legacy-hook":
            return None  # a hook has no build or deploy to get ahead of
        self.api.add_secret(desired.signing_key)
        await self._check_scopes(desired.integration, "ensure",
                                 passwordless=PASSWORDLESS_FLOW in desired.flows)
        target = build_target(desired, render(desired.integration, desired.owner), self._hash_key)
        # The same refusals as ensure(), before any write: a channel that may not use this tenant
        # (its trigger or provider held by someone else) must not leave an action behind.
        if desired.integration == "phone-provider":
            own = (await self._checked_phone_provider(target, None)).own
        else:
            own = (await self._checked_send_phone_message(target, None))[0]
        if own is not None:
            return None  # ours exists: ensure() updates it in place
        applied = await self._apply_action(target, None, None)
        return {"integration": target.integration, "actionId": applied.action_id, "deployedVersion": applied.version,
                "secretsHash": target.secrets_hash, "prepared": True}

    async def remove(self, owner: str, integration: Integration, name: str,
                     recorded: Mapping[str, Any] | None = None) -> list[str]:
        """Delete what `owner` owns for `integration` under `name`; [] when already gone."""
        if integration not in INTEGRATIONS:
            raise ValueError(f"integration must be one of {', '.join(INTEGRATIONS)}, got {integration!r}")
        validate_name(name)
        changed = (recorded or {}).get("routingChanges") or {}
        await self._check_scopes(integration, "remove", bool(changed),
                                 passwordless=routing.CONNECTIONS_KEY in changed)
        previous = Recorded.from_status(recorded)
        removed = await self._restore_routing(changed)
        if integration == "legacy-hook":
            return removed + await self._remove_hook(owner, name, previous)
        return removed + await self._remove_action(owner, integration, name, previous)

    # --- phone-provider ------------------------------------------------------------------------

    async def _checked_phone_provider(self, target: Target, recorded: Recorded | None) -> _ProviderReads:
        """The reads and every refusal, before any write."""
        gw = self.gateway
        actions, bindings, providers, observed = await _first_read_alone(
            partial(gw.list_actions, PROVIDER_TRIGGER), partial(gw.list_bindings, PROVIDER_TRIGGER),
            gw.list_phone_providers, partial(gw.read_routing, False, self._passwordless(target)))
        self._refuse_unroutable(target, observed)
        own = pick_own_action(actions, target, recorded)
        if isinstance(own, Conflict):
            raise _refuse(own, self.credentials.domain)
        conflict = foreign_provider_binding(bindings, {a.id: a.owner for a in actions}, target,
                                            [own.id] if own else [])
        if conflict is not None:
            raise _refuse(conflict, self.credentials.domain)
        methods = routing.delivery_methods(observed, target.desired.voice, target.desired.offer_voice)
        provider_plan = plan_provider(providers, target.desired.replace_foreign_provider,
                                      recorded_matches(target, recorded),
                                      recorded.provider_id if recorded else None, methods)
        if isinstance(provider_plan, Conflict):
            raise _refuse(provider_plan, self.credentials.domain)
        return _ProviderReads(own, bindings, observed, provider_plan,
                              providers[0].id if providers else None, methods)

    async def _ensure_phone_provider(self, target: Target, recorded: Recorded | None,
                                     prepared: bool = False) -> SyncResult:
        gw = self.gateway
        reads = await self._checked_phone_provider(target, recorded)
        bindings, provider_plan, methods = reads.bindings, reads.provider_plan, reads.methods
        applied = await self._apply_action(target, reads.own, recorded)
        action_id, version, repaired, updated, created = (applied.action_id, applied.version, applied.repaired,
                                                          applied.updated, applied.created)
        deployed_now = applied.deployed_now or prepared  # a 409 on activating a just-prepared deploy is transient too
        chain = plan_provider_binding(bindings, action_id, target.name)
        if chain is not None:
            await self._settle(deployed_now, "binding the action to custom-phone-provider",
                               lambda: gw.set_bindings(PROVIDER_TRIGGER, chain))
            foreign = [b.action_name or b.action_id or "?" for b in bindings if b.action_id != action_id]
            if foreign:
                updated.append(f"custom-phone-provider action {', '.join(map(repr, foreign))} replaced")
            elif not created and recorded_matches(target, recorded):
                repaired.append("action was unbound from custom-phone-provider")
        provider_id = reads.provider_id
        if provider_plan.create:
            provider = await self._settle(deployed_now, "creating the custom phone provider",
                                          lambda: gw.create_custom_phone_provider(methods))
            provider_id = provider.id
        elif provider_plan.update and provider_id is not None:
            pid = provider_id
            await self._settle(deployed_now, "switching the phone provider to custom",
                               lambda: gw.update_to_custom_phone_provider(pid, methods))
        verdict = await self._route(target, reads.routing, recorded)
        return SyncResult(
            integration=target.integration, action_id=action_id, hook_id=None,
            provider_id=provider_id, deployed_version=version, secrets_hash=target.secrets_hash,
            fingerprint=target.fingerprint, created=created,
            repaired=[*repaired, *(() if created else provider_plan.repaired)],
            updated=[*updated, *provider_plan.updated], routing=verdict)

    async def _settle(self, deployed_now: bool, what: str, request: Any) -> Any:
        """Run a write that needs our action deployed. Right after our own deploy Auth0 may
        still answer 409 or "deployed action not found": wait that out (it is not a conflict);
        if it lasts, report it as transient."""
        deadline = time.monotonic() + self.settle_timeout
        pause = 0.25
        while True:
            try:
                return await request()
            except Auth0Error as error:
                transient = error.status == 409 or error.error_code == NOT_DEPLOYED_YET
                if not (deployed_now and transient):
                    raise
                if time.monotonic() + pause > deadline:
                    raise Auth0Error(UNAVAILABLE, f"Auth0 tenant {self.credentials.domain}: "
                                     f"{what} still failed {self.settle_timeout:.0f} s after our "
                                     f"deploy ({error.message}); retrying later",
                                     retry_after=self.settle_timeout) from None
                log.debug("%s right after deploy: %s; waiting %.2f s", what, error.message, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    # --- send-phone-message --------------------------------------------------------------------

    async def _checked_send_phone_message(self, target: Target, recorded: Recorded | None
                                          ) -> tuple[ObservedAction | None, list[ObservedBinding], ObservedRouting]:
        """The reads and every refusal, before any write: (own action, bindings, routing)."""
        gw = self.gateway
        trigger_id = target.trigger[0]
        actions, bindings, observed = await _first_read_alone(
            partial(gw.list_actions, trigger_id), partial(gw.list_bindings, trigger_id),
            partial(gw.read_routing, True, self._passwordless(target)))
        self._refuse_unroutable(target, observed)
        own = pick_own_action(actions, target, recorded)
        if isinstance(own, Conflict):
            raise _refuse(own, self.credentials.domain)
        conflict = binding_conflict(bindings, {a.id: a.owner for a in actions}, target.owner)
        if conflict is not None:
            raise _refuse(conflict, self.credentials.domain)
        return own, bindings, observed

    async def _ensure_send_phone_message(self, target: Target, recorded: Recorded | None,
                                         prepared: bool = False) -> SyncResult:
        gw = self.gateway
        trigger_id = target.trigger[0]
        own, bindings, observed = await self._checked_send_phone_message(target, recorded)
        applied = await self._apply_action(target, own, recorded)
        action_id, version, repaired, updated, created = (applied.action_id, applied.version, applied.repaired,
                                                          applied.updated, applied.created)
        deployed_now = applied.deployed_now or prepared  # a 409 on activating a just-prepared deploy is transient too
        chain = plan_binding_add(bindings, action_id, target.name)
        if chain is not None:
            await self._settle(deployed_now, "binding the action to send-phone-message",
                               lambda: gw.set_bindings(trigger_id, chain))
            if not created and recorded_matches(target, recorded):
                repaired.append("action was unbound from send-phone-message")
        verdict = await self._route(target, observed, recorded)
        return SyncResult(
            integration=target.integration, action_id=action_id, hook_id=None, provider_id=None,
            deployed_version=version, secrets_hash=target.secrets_hash,
            fingerprint=target.fingerprint, created=created, repaired=repaired, updated=updated,
            routing=verdict)

    # --- shared action steps -------------------------------------------------------------------

    async def _apply_action(self, target: Target, own: ObservedAction | None,
                            recorded: Recorded | None) -> AppliedAction:
        """Create/update the draft, and when it changed: wait until built, deploy, wait until
        that version is deployed."""
        gw = self.gateway
        plan = plan_action(target, own, recorded)
        if own is None:
            action_id = (await gw.create_action(target.name, target.trigger, target.code,
                                                target.secrets)).id
        else:
            action_id = own.id
            if plan.write_code or plan.write_secrets:
                await gw.update_action(action_id,
                                       code=target.code if plan.write_code else None,
                                       secrets=target.secrets if plan.write_secrets else None)
        version = own.deployed_version if own is not None else None
        if plan.deploy:
            await self._wait_until_built(action_id)
            version_id, version = await gw.deploy_action(action_id)
            await self._wait_until_deployed(action_id, version_id)
        created = own is None and not plan.repaired
        return AppliedAction(action_id, version, list(plan.repaired), list(plan.updated), created, plan.deploy)

    async def _wait_until_built(self, action_id: str) -> None:
        """Deploying a draft that is still building fails: wait for `built`."""
        def built(action: ObservedAction) -> bool:
            if action.status == "failed":
                detail = "; ".join(action.build_errors) or "no detail given"
                raise Auth0Error(BUILD_FAILED, f"Auth0 tenant {self.credentials.domain}: action "
                                 f"{action.name!r} failed to build ({detail[:300]}); nothing was "
                                 "deployed, the previous version keeps serving")
            return action.status == "built"

        await self._poll_action(action_id, built, "built", self.build_timeout)

    async def _wait_until_deployed(self, action_id: str, version_id: str | None) -> None:
        """Auth0 answers a deploy before it finished: wait until that version serves."""
        await self._poll_action(
            action_id, lambda action: version_id is not None and action.deployed_version_id == version_id,
            "deployed", self.deploy_timeout)

    async def _poll_action(self, action_id: str, done: Callable[[ObservedAction], bool], state: str,
                           timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            await asyncio.sleep(pause)
            action = await self.gateway.get_action(action_id)
            if action is None:
                raise Auth0Error(CONFLICT, f"Auth0 tenant {self.credentials.domain}: action "
                                 f"{action_id} disappeared before it was {state}")
            if done(action):
                return
            pause = min(pause * POLL_GROWTH, POLL_MAX)
            if time.monotonic() + pause > deadline:
                raise Auth0Error(UNAVAILABLE, f"Auth0 tenant {self.credentials.domain}: action "
                                 f"{action.name!r} not {state} after {timeout:.0f} s",
                                 retry_after=timeout)

    # --- phone routing -------------------------------------------------------------------------

    @staticmethod
    def _passwordless(target: Target) -> bool:
        return PASSWORDLESS_FLOW in target.desired.flows

    def _refuse_unroutable(self, target: Target, observed: ObservedRouting) -> None:
        """With manage_routing, every routing change or none: a tenant that cannot take all of
        them is refused before the first write (of the routing and of the integration)."""
        if not target.desired.manage_routing:
            return
        mfa = routing.problems(target.integration, observed, target.desired.offer_voice)
        stuck = routing.unfixable(
            [*mfa, *routing.connection_problems(target.integration, observed, target.desired.flows)])
        if stuck:
            verdict = routing.verdict(target.integration, target.name, self.credentials.domain,
                                      mfa, {}, target.desired.flows, observed, target.desired.voice)
            message = (f"Auth0 tenant {self.credentials.domain}: spec.auth0.manageRouting changed "
                       "nothing (every routing change or none), because no Management API call "
                       f"can make this one: {'; '.join(p.message for p in stuck)}")
            raise RoutingRefused(replace(
                verdict, ok=False, reason=stuck[0].reason, message=message,
                unknown=stuck[0].reason == routing.PASSWORDLESS_UNKNOWN), message)

    async def _route(self, target: Target, observed: ObservedRouting,
                     recorded: Recorded | None) -> RoutingVerdict:
        """Check (and with manage_routing, fix) that the tenant routes its phone flows to our
        code. Each change is recorded (see RoutingRecorder) before the next write."""
        changed: dict[str, Any] = dict(recorded.routing_changes) if recorded else {}
        remaining = routing.problems(target.integration, observed, target.desired.offer_voice)
        moves = routing.connection_problems(target.integration, observed, target.desired.flows)
        if target.desired.manage_routing and (remaining or moves):
            record = _recorder.get()
            for problem in [*remaining, *moves]:
                assert problem.key is not None  # unfixable ones were refused before any write
                if _record_change(changed, observed, problem) and record is not None:
                    await record(dict(changed))
                if problem.connection is not None:
                    await self.gateway.set_use_phone_provider(problem.connection, True)
                else:
                    await self._write_routing(problem.key, problem.wanted)
            observed, remaining = routing.after_changes(observed, [*remaining, *moves]), []
        return routing.verdict(target.integration, target.name, self.credentials.domain,
                               remaining, changed, target.desired.flows, observed, target.desired.voice)

    async def _write_routing(self, key: str, value: Any) -> None:
        gw = self.gateway
        if key == routing.UPE_KEY:
            await gw.set_phone_experience(bool(value))
        elif key == routing.SMS_FACTOR_KEY:
            await gw.set_sms_factor(bool(value))
        elif key == routing.MESSAGE_TYPES_KEY:
            await gw.set_message_types(list(value))
        elif key == routing.SELECTED_PROVIDER_KEY and value:
            await gw.set_selected_provider(str(value))

    async def _restore_routing(self, changed: Mapping[str, Any]) -> list[str]:
        restored = []
        for key, value in routing.restore_plan(changed):
            if key == routing.CONNECTIONS_KEY:
                restored += await self._restore_connections(value)
                continue
            await self._write_routing(key, value)
            restored.append(f"tenant phone routing {key} restored to {value!r}")
        return restored

    async def _restore_connections(self, before: Mapping[str, bool | None]) -> list[str]:
        """Put each moved connection's use_phone_provider back (read fresh: PATCH replaces the
        whole options object, so what others changed since is kept)."""
        restored = []
        for connection_id, value in before.items():
            connection = await self.gateway.get_connection(connection_id)
            if connection is None:
                restored.append(f"passwordless connection {connection_id} is gone: nothing to restore")
                continue
            withheld = routing.withheld_credentials(connection.options)
            if withheld:  # PATCH would erase them: leave it to a person
                log.warning("not restoring passwordless connection %r: Auth0 did not return its "
                            "%s; set options.%s back to %s in the Dashboard", connection.name,
                            ", ".join(withheld), routing.USE_PHONE_PROVIDER, value)
                restored.append(f"passwordless connection {connection.name!r} NOT restored "
                                f"(Auth0 withheld {', '.join(withheld)}): set it back by hand")
                continue
            await self.gateway.set_use_phone_provider(connection, value)
            restored.append(f"passwordless connection {connection.name!r} "
                            f"options.{routing.USE_PHONE_PROVIDER} restored to "
                            f"{'absent' if value is None else value!r}")
        return restored

    async def _remove_action(self, owner: str, integration: Integration, name: str,
                             recorded: Recorded | None) -> list[str]:
        gw = self.gateway
        trigger_id = ACTION_TRIGGERS[integration][0]
        recorded_id = recorded.action_id if recorded else None
        actions = await gw.list_actions(trigger_id)
        own = [a for a in actions if a.name == name and is_ours(a.owner, a.id, owner, recorded_id)]
        for action in actions:
            if action.name == name and action not in own:
                log.warning("not removing action %r: %s", name,
                            describe_holder("it", name, action.owner))
        removed: list[str] = []
        if own:
            bindings = await gw.list_bindings(trigger_id)
            for action in own:
                chain = plan_binding_removal(bindings, action.id)
                if chain is not None:
                    await gw.set_bindings(trigger_id, chain)
                    bindings = [b for b in bindings if b.action_id != action.id]
                    removed.append(f"{trigger_id} binding of {action.name!r}")
        if integration == "phone-provider":
            providers = await gw.list_phone_providers()
            recorded_provider = recorded.provider_id if recorded else None
            for provider in providers:
                if provider.name == CUSTOM_PROVIDER and (own or provider.id == recorded_provider):
                    await gw.delete_phone_provider(provider.id)
                    removed.append(f"phone provider {provider.name} ({provider.id})")
        for action in own:
            if await gw.delete_action(action.id, force=True):
                removed.append(f"action {action.name!r} ({action.id})")
        return removed

    # --- legacy-hook ---------------------------------------------------------------------------

    async def _ensure_legacy_hook(self, target: Target, recorded: Recorded | None) -> SyncResult:
        gw = self.gateway
        hooks, observed = await _first_read_alone(
            gw.list_hooks, partial(gw.read_routing, True, self._passwordless(target)))
        self._refuse_unroutable(target, observed)
        own = pick_own_hook(hooks, target, recorded)
        if isinstance(own, Conflict):
            raise _refuse(own, self.credentials.domain)
        names = await gw.hook_secret_names(own.id) if own is not None else frozenset()
        plan = plan_hook(target, own, names, recorded)
        hook_id = own.id if own is not None else (await gw.create_hook(target.name, target.code)).id
        secret_writes = plan.add_secrets or plan.change_secrets or plan.delete_secrets
        # Enable last when secrets change, so the hook never runs without its secrets.
        enable_now = plan.enable and not secret_writes and not plan.create
        if plan.script or enable_now:
            await gw.update_hook(hook_id, script=target.code if plan.script else None,
                                 enabled=True if enable_now else None)
        if plan.delete_secrets:
            await gw.delete_hook_secrets(hook_id, plan.delete_secrets)
        if plan.add_secrets:
            await gw.add_hook_secrets(hook_id, {k: target.secrets[k] for k in plan.add_secrets})
        if plan.change_secrets:
            await gw.change_hook_secrets(hook_id, {k: target.secrets[k] for k in plan.change_secrets})
        if plan.enable and not enable_now:
            await gw.update_hook(hook_id, enabled=True)
        return SyncResult(
            integration=target.integration, action_id=None, hook_id=hook_id, provider_id=None,
            deployed_version=None, secrets_hash=target.secrets_hash, fingerprint=target.fingerprint,
            created=plan.create and not plan.repaired, repaired=list(plan.repaired),
            updated=list(plan.updated), routing=await self._route(target, observed, recorded))

    async def _remove_hook(self, owner: str, name: str, recorded: Recorded | None) -> list[str]:
        recorded_id = recorded.hook_id if recorded else None
        removed: list[str] = []
        for hook in await self.gateway.list_hooks():
            if hook.name != name:
                continue
            if is_ours(hook.owner, hook.id, owner, recorded_id):
                await self.gateway.delete_hook(hook.id)
                removed.append(f"hook {hook.name!r} ({hook.id})")
            else:
                log.warning("not removing hook %r: %s", name, describe_holder("it", name, hook.owner))
        return removed

    # --- spec.conversion: the log stream -----------------------------------------------------------

    async def ensure_log_stream(self, desired: DesiredLogStream, relay_ready: bool) -> LogStreamResult:
        """Create or correct the channel's log stream; no write when it matches. Refusals a
        person must resolve (plan, scopes, a foreign stream) are results, not errors; other
        Auth0 failures raise Auth0Error."""
        domain = self.credentials.domain
        for token in desired.tokens:
            self.api.add_secret(token)
        missing = await self._missing_scopes(LOG_STREAM_SCOPES)
        if missing:
            return LogStreamResult(False, MISSING_SCOPE, self._scope_message(missing))
        writes_before = self.api.writes
        try:
            plan = plan_log_stream(desired, await self.gateway.list_log_streams(), relay_ready)
            if plan.conflict:
                return LogStreamResult(False, LOG_STREAM_CONFLICT, f"Auth0 tenant {domain}: {plan.conflict}",
                                       plan.stream.id if plan.stream else None)
            if plan.create:
                stream = await self.gateway.create_log_stream(desired)
                return LogStreamResult(True, LOG_STREAM_ACTIVE, self._active(desired, stream.id), stream.id,
                                       created=True, writes=self.api.writes - writes_before)
            if plan.stream is None:
                return LogStreamResult(False, LOG_STREAM_WAITING, f"the log stream {desired.name!r} is created "
                                       "on Auth0 tenant " f"{domain} once the relay is available")
            stream = plan.stream
            if plan.writes:
                await self.gateway.update_log_stream(stream.id, desired, sink=plan.sink, filters=plan.filters,
                                                     resume=plan.resume)
            elif stream.status != "active":
                return LogStreamResult(False, LOG_STREAM_SUSPENDED, (
                    f"Auth0 tenant {domain} has the log stream {desired.name!r} ({stream.id}) {stream.status}: "
                    "Auth0 stops a stream whose sink keeps failing; the operator sets it back to active once "
                    "the relay is available (check the relay's public URL reaches /v1/auth0-logs)"), stream.id)
            return LogStreamResult(True, LOG_STREAM_ACTIVE, self._active(desired, stream.id), stream.id,
                                   updated=plan.changed if plan.writes else (), resumed=plan.resume,
                                   writes=self.api.writes - writes_before)
        except Auth0Error as error:
            refused = self._log_streams_refused(error)
            if refused is not None:
                return LogStreamResult(*refused)
            raise

    async def remove_log_stream(self, desired: DesiredLogStream) -> list[str]:
        """Delete the channel's log stream (never another's of the same name); [] when none."""
        for token in desired.tokens:
            self.api.add_secret(token)
        missing = await self._missing_scopes(LOG_STREAM_SCOPES)
        if missing:
            raise Auth0Error(FORBIDDEN, self._scope_message(missing))
        removed = []
        for stream in await self.gateway.list_log_streams():
            if stream.name != desired.name:
                continue
            if not is_our_log_stream(stream, desired):
                log.warning("not removing log stream %r (%s): it sends to %s, not this channel's relay",
                            stream.name, stream.id, stream.endpoint)
                continue
            await self.gateway.delete_log_stream(stream.id)
            removed.append(f"log stream {stream.name!r} ({stream.id})")
        return removed

    async def _missing_scopes(self, required: Iterable[str]) -> list[str]:
        """The scopes of ``required`` the tenant's token lacks (the token is fetched first)."""
        await self.api.tokens.token()
        return missing_scopes(required, self.api.tokens.granted_scopes)

    def _scope_message(self, missing: list[str]) -> str:
        return (f"Auth0 tenant {self.credentials.domain}: the client {self.credentials.client_id} lacks the "
                f"scopes spec.conversion needs for the log stream; grant: {', '.join(missing)}")

    def _active(self, desired: DesiredLogStream, stream_id: str) -> str:
        return (f"Auth0 log stream {desired.name!r} ({stream_id}) on {self.credentials.domain} sends "
                f"to {desired.endpoint}")

    def _log_streams_refused(self, error: Auth0Error) -> tuple[bool, str, str] | None:
        domain = self.credentials.domain
        if error.status == 403 and "scope" in error.message.lower():
            return False, MISSING_SCOPE, f"{error.message} (spec.conversion's log stream)"
        if error.error_code == TOO_MANY_STREAMS_CODE or (error.status == 403 and "plan" in error.message.lower()):
            return False, LOG_STREAMS_NOT_ALLOWED, (
                f"Auth0 tenant {domain} refused the log stream spec.conversion needs: {error.message}. The "
                "tenant's plan limits its log streams: delete an unused stream, move to a plan that allows "
                "one more, or turn spec.conversion off")
        return None

    # --- scopes --------------------------------------------------------------------------------

    async def _check_scopes(self, integration: Integration, operation: str,
                            routing_writes: bool = False, passwordless: bool = True) -> None:
        """Refuse before any Management API request when the token lacks scopes we need."""
        missing = await self._missing_scopes(required_scopes(integration, operation, passwordless=passwordless,
                                                             routing_writes=routing_writes))
        if missing:
            raise Auth0Error(FORBIDDEN, f"Auth0 tenant {self.credentials.domain}: the client "
                             f"{self.credentials.client_id} lacks scopes needed to {operation} the "
                             f"{integration} integration; grant: {', '.join(missing)}")


def _record_change(changed: dict[str, Any], observed: ObservedRouting, problem: routing.Problem) -> bool:
    """Add the value before `problem`'s change to `changed` unless an earlier change of the
    same setting is recorded (that one is what removal restores). True when something was added."""
    assert problem.key is not None
    before = routing.current_value(observed, problem)
    if problem.connection is not None:
        moved = dict(changed.get(problem.key) or {})
        if problem.connection.id in moved:
            return False
        changed[problem.key] = {**moved, problem.connection.id: before}
        return True
    if problem.key in changed:
        return False
    changed[problem.key] = before
    return True


def _with_writes(result: SyncResult, writes: int) -> SyncResult:
    return replace(result, writes=writes)
