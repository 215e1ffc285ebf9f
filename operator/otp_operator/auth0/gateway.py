"""Thin typed adapter over the auth0-python SDK: one Management API request per method,
answers converted to the `Observed*` records of `model.py`. No decisions here."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from auth0.management.types import (
    ActionBindingRef,
    ActionBindingWithRef,
    ActionSecretRequest,
    ActionTrigger,
    CreateLogStreamHttpRequestBody,
    CustomProviderConfiguration,
    CustomProviderCredentials,
    LogStreamFilter,
    LogStreamHttpSink,
)

from .client import ManagementApi
from .errors import Auth0Error
from .model import (
    ACTION_RUNTIME,
    CUSTOM_PROVIDER,
    HOOK_TRIGGER,
    LOG_STREAM_FILTERS,
    BindingRef,
    DesiredLogStream,
    ObservedAction,
    ObservedBinding,
    ObservedHook,
    ObservedLogStream,
    ObservedProvider,
)
from .routing import LEGACY_NOT_ALLOWED_CODE, SMS, USE_PHONE_PROVIDER, ObservedConnection, ObservedRouting, experience_in_effect
from .templates import parse_marker

# Optional: with it the MFA policy is shown in status, without it "unknown" (never required).
MFA_POLICIES_SCOPE = "read:mfa_policies"
_PAGE = 50
_MAX_PAGES = 20  # 1000 objects per trigger is far beyond any real tenant


def _owner(code: str | None) -> str | None:
    marker = parse_marker(code)
    return marker.owner if marker else None


def _build_errors(raw: Any) -> tuple[str, ...]:
    errors = getattr(raw, "errors", None) or (getattr(raw, "model_extra", None) or {}).get("errors")
    return tuple(str(e.get("msg") if isinstance(e, Mapping) else getattr(e, "msg", e))
                 for e in errors or ())


def _action(raw: Any) -> ObservedAction:
    deployed = raw.deployed_version
    number = getattr(deployed, "number", None) if deployed is not None else None
    return ObservedAction(
        id=raw.id,
        name=raw.name or "",
        code=raw.code,
        secret_names=frozenset(s.name for s in (raw.secrets or []) if s.name),
        status=raw.status,
        deployed_version=int(number) if number is not None else None,
        deployed_version_id=getattr(deployed, "id", None) if deployed is not None else None,
        build_errors=_build_errors(raw),
        deployed_code=getattr(deployed, "code", None) if deployed is not None else None,
        all_changes_deployed=bool(raw.all_changes_deployed),
        owner=_owner(raw.code),
    )


def _hook(raw: Any) -> ObservedHook:
    return ObservedHook(id=raw.id, name=raw.name or "", script=raw.script,
                        enabled=bool(raw.enabled), owner=_owner(raw.script))


def _connection(raw: Any) -> ObservedConnection:
    """Without read:connections_options Auth0 answers a connection without its options."""
    options = getattr(raw, "options", None)
    if options is not None and not isinstance(options, Mapping):
        options = options.model_dump(exclude_unset=True) if hasattr(options, "model_dump") else dict(options)
    return ObservedConnection(id=str(raw.id), name=str(raw.name or raw.id), options=dict(options or {}),
                              options_read=options is not None)


def _provider(raw: Any) -> ObservedProvider:
    config = raw.configuration
    methods = getattr(config, "delivery_methods", None) if config is not None else None
    return ObservedProvider(id=raw.id, name=str(raw.name), disabled=bool(raw.disabled),
                            delivery_methods=tuple(methods or ()))


def _sink_value(sink: Any, attribute: str, key: str) -> str:
    value = sink.get(key) if isinstance(sink, Mapping) else getattr(sink, attribute, None)
    return str(value or "")


def _log_stream(raw: Any) -> ObservedLogStream:
    sink = getattr(raw, "sink", None)
    filters = tuple(sorted(str((f.get("name") if isinstance(f, Mapping) else getattr(f, "name", None)) or "")
                           for f in getattr(raw, "filters", None) or ()))
    return ObservedLogStream(id=str(raw.id), name=str(raw.name or ""), type=str(raw.type or ""),
                             status=str(raw.status or ""),
                             endpoint=_sink_value(sink, "http_endpoint", "httpEndpoint"),
                             authorization=_sink_value(sink, "http_authorization", "httpAuthorization"),
                             content_format=_sink_value(sink, "http_content_format", "httpContentFormat"),
                             content_type=_sink_value(sink, "http_content_type", "httpContentType"),
                             filters=filters)


def _http_sink(desired: DesiredLogStream) -> LogStreamHttpSink:
    sink = desired.sink()
    return LogStreamHttpSink(http_endpoint=sink["httpEndpoint"], http_authorization=sink["httpAuthorization"],
                             http_content_format=sink["httpContentFormat"],
                             http_content_type=sink["httpContentType"])


def _filters() -> list[LogStreamFilter]:
    return [LogStreamFilter(type="category", name=name) for name in LOG_STREAM_FILTERS]


class Gateway:
    def __init__(self, api: ManagementApi) -> None:
        self.api = api
        self.sdk = api.sdk

    # --- actions -----------------------------------------------------------------------------

    async def list_actions(self, trigger_id: str) -> list[ObservedAction]:
        found: list[ObservedAction] = []
        for page in range(_MAX_PAGES):
            pager = await self.api.call(
                f"GET actions?triggerId={trigger_id}",
                partial(self.sdk.actions.list, trigger_id=trigger_id, page=page, per_page=_PAGE))
            items = list(pager.items or []) if pager else []
            found.extend(_action(item) for item in items)
            if len(items) < _PAGE:
                break
        return found

    async def get_action(self, action_id: str) -> ObservedAction | None:
        raw = await self.api.call("GET action", lambda: self.sdk.actions.get(action_id))
        return _action(raw) if raw is not None else None

    async def create_action(self, name: str, trigger: tuple[str, str], code: str,
                            secrets: Mapping[str, str]) -> ObservedAction:
        raw = await self.api.call("POST action", lambda: self.sdk.actions.create(
            name=name, supported_triggers=[ActionTrigger(id=trigger[0], version=trigger[1])],
            code=code, runtime=ACTION_RUNTIME, dependencies=[],
            secrets=[ActionSecretRequest(name=k, value=v) for k, v in sorted(secrets.items())],
        ), write=True)
        return _action(raw)

    async def update_action(self, action_id: str, *, code: str | None,
                            secrets: Mapping[str, str] | None) -> None:
        fields: dict[str, Any] = {}
        if code is not None:
            fields["code"] = code
        if secrets is not None:
            fields["secrets"] = [ActionSecretRequest(name=k, value=v) for k, v in sorted(secrets.items())]
        await self.api.call("PATCH action", lambda: self.sdk.actions.update(action_id, **fields),
                            write=True)

    async def deploy_action(self, action_id: str) -> tuple[str | None, int | None]:
        """Starts a deploy (Auth0 finishes it later); the new version's id and number."""
        raw = await self.api.call("POST action deploy", lambda: self.sdk.actions.deploy(action_id),
                                  write=True)
        number = getattr(raw, "number", None)
        return getattr(raw, "id", None), int(number) if number is not None else None

    async def delete_action(self, action_id: str, *, force: bool = False) -> bool:
        done = await self.api.call("DELETE action", lambda: self._delete_action(action_id, force),
                                   write=True)
        return done is not None

    async def _delete_action(self, action_id: str, force: bool) -> bool:
        await self.sdk.actions.delete(action_id, force=force or None)
        return True

    async def list_bindings(self, trigger_id: str) -> list[ObservedBinding]:
        found: list[ObservedBinding] = []
        for page in range(_MAX_PAGES):
            pager = await self.api.call(
                f"GET {trigger_id} bindings",
                partial(self.sdk.actions.triggers.bindings.list, trigger_id, page=page, per_page=_PAGE))
            items = list(pager.items or []) if pager else []
            for item in items:
                action = item.action
                found.append(ObservedBinding(action_id=getattr(action, "id", None),
                                             action_name=getattr(action, "name", None),
                                             display_name=item.display_name))
            if len(items) < _PAGE:
                break
        return found

    async def set_bindings(self, trigger_id: str, bindings: Sequence[BindingRef]) -> None:
        refs = [ActionBindingWithRef(ref=ActionBindingRef(type="action_id", value=b.action_id),
                                     display_name=b.display_name) for b in bindings]
        await self.api.call(f"PATCH {trigger_id} bindings",
                            lambda: self.sdk.actions.triggers.bindings.update_many(trigger_id, bindings=refs),
                            write=True)

    # --- phone providers -----------------------------------------------------------------------

    async def list_phone_providers(self) -> list[ObservedProvider]:
        raw = await self.api.call("GET phone providers", lambda: self.sdk.branding.phone.providers.list())
        return [_provider(p) for p in (raw.providers or [])] if raw is not None else []

    async def create_custom_phone_provider(self, methods: Sequence[str]) -> ObservedProvider:
        raw = await self.api.call("POST phone provider", lambda: self.sdk.branding.phone.providers.create(
            name=CUSTOM_PROVIDER, disabled=False, credentials=CustomProviderCredentials(),
            configuration=CustomProviderConfiguration(delivery_methods=list(methods)),
        ), write=True)
        return _provider(raw)

    async def update_to_custom_phone_provider(self, provider_id: str, methods: Sequence[str]) -> None:
        await self.api.call("PATCH phone provider", lambda: self.sdk.branding.phone.providers.update(
            provider_id, name=CUSTOM_PROVIDER, disabled=False, credentials=CustomProviderCredentials(),
            configuration=CustomProviderConfiguration(delivery_methods=list(methods)),
        ), write=True)

    async def try_phone_provider(self, provider_id: str, to: str) -> bool:
        """Auth0 sends a test text through the provider (the canary); False when Auth0 answers
        404 (no such provider). Not a write of the tenant; raises Auth0Error on a refusal."""
        done = await self.api.call("POST phone provider try", lambda: self._try(provider_id, to))
        return done is not None

    async def _try(self, provider_id: str, to: str) -> bool:
        await self.sdk.branding.phone.providers.test(provider_id, to=to, delivery_method="text")
        return True

    async def delete_phone_provider(self, provider_id: str) -> None:
        await self.api.call("DELETE phone provider",
                            lambda: self.sdk.branding.phone.providers.delete(provider_id), write=True)

    # --- phone routing (tenant settings and the MFA phone factor) -----------------------------

    async def read_routing(self, legacy_mode: bool, passwordless: bool = False) -> ObservedRouting:
        """Three reads (four with the passwordless sms connections, five when the client may
        read the MFA policy), and the legacy selected-provider endpoint when its answer matters:
        for the legacy modes (the provider they need, and whether the tenant may use it at all),
        and whenever the experience setting is absent (its answer then says which path is live)."""
        async def skipped() -> None:
            return None

        policies_readable = MFA_POLICIES_SCOPE in (self.api.tokens.granted_scopes or ())
        settings, factors, types, connections, policies = await asyncio.gather(
            self.api.call("GET tenant settings", lambda: self.sdk.tenants.settings.get(
                fields="phone_consolidated_experience", include_fields=True)),
            self.api.call("GET guardian factors", lambda: self.sdk.guardian.factors.list()),
            self.api.call("GET phone message types", lambda: self.sdk.guardian.factors.phone.get_message_types()),
            self.list_sms_connections() if passwordless else skipped(),
            self.api.call("GET guardian policies", lambda: self.sdk.guardian.policies.list())
            if policies_readable else skipped())
        flag = getattr(settings, "phone_consolidated_experience", None) if settings else None
        allowed, selected = (await self.legacy_provider()) if legacy_mode or flag is None else (None, None)
        upe = experience_in_effect(flag, allowed)
        assert upe is not None  # asked the legacy endpoint whenever the flag is absent
        sms = any(getattr(f, "name", None) == SMS and getattr(f, "enabled", False) for f in factors or ())
        return ObservedRouting(upe=upe, sms_factor=sms,
                               message_types=tuple(str(t) for t in getattr(types, "message_types", None) or ()),
                               selected_provider=selected, experience_set=flag is not None,
                               legacy_allowed=allowed,
                               connections=tuple(connections) if connections is not None else None,
                               mfa_policies=tuple(str(p) for p in policies or ())
                               if policies_readable else None)

    async def list_sms_connections(self) -> list[ObservedConnection]:
        """The passwordless `strategy: sms` connections (checkpoint pages of 50)."""
        found: list[ObservedConnection] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            pager = await self.api.call("GET connections?strategy=sms", partial(
                self.sdk.connections.list, strategy="sms", take=_PAGE, from_=cursor, include_totals=None))
            found += [_connection(item) for item in ((pager.items or []) if pager else [])]
            response = getattr(pager, "response", None)
            cursor = getattr(response, "next", None) or None
            if not cursor:
                break
        return found

    async def get_connection(self, connection_id: str) -> ObservedConnection | None:
        raw = await self.api.call("GET connection", lambda: self.sdk.connections.get(connection_id))
        return _connection(raw) if raw is not None else None

    async def set_use_phone_provider(self, connection: ObservedConnection, value: bool | None) -> None:
        """Set (None: remove) options.use_phone_provider. PATCH replaces the whole options
        object, so the rest of `connection.options` (as just read) goes with it."""
        options = {k: v for k, v in connection.options.items() if k != USE_PHONE_PROVIDER}
        if value is not None:
            options[USE_PHONE_PROVIDER] = value
        await self.api.call("PATCH connection options", lambda: self.sdk.connections.update(
            connection.id, options=options), write=True)

    async def legacy_provider(self) -> tuple[bool, str | None]:
        """(the tenant may use the legacy Guardian phone endpoints, the selected provider).
        Their 403 legacy_mfa_phone_provider_not_allowed is an answer, not a failure."""
        try:
            raw = await self.api.call("GET guardian phone provider",
                                      lambda: self.sdk.guardian.factors.phone.get_selected_provider())
        except Auth0Error as error:
            if error.status == 403 and error.error_code == LEGACY_NOT_ALLOWED_CODE:
                return False, None
            raise
        return True, str(getattr(raw, "provider", None) or "") or None

    async def set_phone_experience(self, on: bool) -> None:
        await self.api.call("PATCH tenant settings", lambda: self.sdk.tenants.settings.update(
            phone_consolidated_experience=on), write=True)

    async def set_sms_factor(self, enabled: bool) -> None:
        await self.api.call("PUT guardian factor sms",
                            lambda: self.sdk.guardian.factors.set(SMS, enabled=enabled), write=True)

    async def set_message_types(self, types: Sequence[str]) -> None:
        await self.api.call("PUT phone message types", lambda: self.sdk.guardian.factors.phone.set_message_types(
            message_types=list(types)), write=True)

    async def set_selected_provider(self, provider: str) -> None:
        await self.api.call("PUT guardian phone provider", lambda: self.sdk.guardian.factors.phone.set_provider(
            provider=provider), write=True)

    # --- log streams (spec.conversion) -----------------------------------------------------------

    async def list_log_streams(self) -> list[ObservedLogStream]:
        raw = await self.api.call("GET log streams", lambda: self.sdk.log_streams.list())
        return [_log_stream(s) for s in raw or () if getattr(s, "id", None)]

    async def create_log_stream(self, desired: DesiredLogStream) -> ObservedLogStream:
        raw = await self.api.call("POST log stream", lambda: self.sdk.log_streams.create(
            request=CreateLogStreamHttpRequestBody(name=desired.name, type="http", sink=_http_sink(desired),
                                                   filters=_filters())), write=True)
        return _log_stream(raw)

    async def update_log_stream(self, stream_id: str, desired: DesiredLogStream, *, sink: bool, filters: bool,
                                resume: bool) -> None:
        fields: dict[str, Any] = {}
        if sink:
            fields["sink"] = _http_sink(desired)
        if filters:
            fields["filters"] = _filters()
        if resume:
            fields["status"] = "active"
        await self.api.call("PATCH log stream", lambda: self.sdk.log_streams.update(stream_id, **fields),
                            write=True)

    async def delete_log_stream(self, stream_id: str) -> None:
        await self.api.call("DELETE log stream", lambda: self.sdk.log_streams.delete(stream_id), write=True)

    # --- hooks ---------------------------------------------------------------------------------

    async def list_hooks(self) -> list[ObservedHook]:
        found: list[ObservedHook] = []
        for page in range(_MAX_PAGES):
            pager = await self.api.call(
                f"GET hooks?triggerId={HOOK_TRIGGER}",
                partial(self.sdk.hooks.list, trigger_id=HOOK_TRIGGER, page=page, per_page=_PAGE,
                        include_totals=True))
            items = list(pager.items or []) if pager else []
            found.extend(_hook(item) for item in items)
            if len(items) < _PAGE:
                break
        return found

    async def create_hook(self, name: str, script: str) -> ObservedHook:
        raw = await self.api.call("POST hook", lambda: self.sdk.hooks.create(
            name=name, script=script, trigger_id=HOOK_TRIGGER, enabled=False), write=True)
        return _hook(raw)

    async def update_hook(self, hook_id: str, *, script: str | None = None,
                          enabled: bool | None = None) -> None:
        fields: dict[str, Any] = {}
        if script is not None:
            fields["script"] = script
        if enabled is not None:
            fields["enabled"] = enabled
        await self.api.call("PATCH hook", lambda: self.sdk.hooks.update(hook_id, **fields), write=True)

    async def delete_hook(self, hook_id: str) -> None:
        await self.api.call("DELETE hook", lambda: self.sdk.hooks.delete(hook_id), write=True)

    async def hook_secret_names(self, hook_id: str) -> frozenset[str]:
        raw = await self.api.call("GET hook secrets", lambda: self.sdk.hooks.secrets.get(hook_id))
        return frozenset(raw or {})

    async def add_hook_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> None:
        await self.api.call("POST hook secrets",
                            lambda: self.sdk.hooks.secrets.create(hook_id, request=dict(secrets)),
                            write=True)

    async def change_hook_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> None:
        await self.api.call("PATCH hook secrets",
                            lambda: self.sdk.hooks.secrets.update(hook_id, request=dict(secrets)),
                            write=True)

    async def delete_hook_secrets(self, hook_id: str, names: Sequence[str]) -> None:
        await self.api.call("DELETE hook secrets",
                            lambda: self.sdk.hooks.secrets.delete(hook_id, request=list(names)),
                            write=True)
