"""Thin typed adapter over the auth0-python SDK: one Management API request per method,
answers converted to the `Observed*` records of `model.py`. No decisions here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from auth0.management.types import (ActionBindingRef, ActionBindingWithRef, ActionSecretRequest,
                                    ActionTrigger, CustomProviderConfiguration,
                                    CustomProviderCredentials)

from .client import ManagementApi
from .model import (ACTION_RUNTIME, CUSTOM_PROVIDER, HOOK_TRIGGER, PROVIDER_DELIVERY_METHODS,
                    BindingRef, ObservedAction, ObservedBinding, ObservedHook, ObservedProvider)
from .templates import parse_marker

_PAGE = 50
_MAX_PAGES = 20  # 1000 objects per trigger is far beyond any real tenant


def _owner(code: str | None) -> str | None:
    marker = parse_marker(code)
    return marker.owner if marker else None


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
        deployed_code=getattr(deployed, "code", None) if deployed is not None else None,
        all_changes_deployed=bool(raw.all_changes_deployed),
        owner=_owner(raw.code),
    )


def _hook(raw: Any) -> ObservedHook:
    return ObservedHook(id=raw.id, name=raw.name or "", script=raw.script,
                        enabled=bool(raw.enabled), owner=_owner(raw.script))


def _provider(raw: Any) -> ObservedProvider:
    config = raw.configuration
    methods = getattr(config, "delivery_methods", None) if config is not None else None
    return ObservedProvider(id=raw.id, name=str(raw.name), disabled=bool(raw.disabled),
                            delivery_methods=tuple(methods or ()))


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
                lambda page=page: self.sdk.actions.list(trigger_id=trigger_id, page=page, per_page=_PAGE))
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

    async def deploy_action(self, action_id: str) -> int | None:
        raw = await self.api.call("POST action deploy", lambda: self.sdk.actions.deploy(action_id),
                                  write=True)
        number = getattr(raw, "number", None)
        return int(number) if number is not None else None

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
                lambda page=page: self.sdk.actions.triggers.bindings.list(trigger_id, page=page,
                                                                         per_page=_PAGE))
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

    async def create_custom_phone_provider(self) -> ObservedProvider:
        raw = await self.api.call("POST phone provider", lambda: self.sdk.branding.phone.providers.create(
            name=CUSTOM_PROVIDER, disabled=False, credentials=CustomProviderCredentials(),
            configuration=CustomProviderConfiguration(delivery_methods=list(PROVIDER_DELIVERY_METHODS)),
        ), write=True)
        return _provider(raw)

    async def update_to_custom_phone_provider(self, provider_id: str) -> None:
        await self.api.call("PATCH phone provider", lambda: self.sdk.branding.phone.providers.update(
            provider_id, name=CUSTOM_PROVIDER, disabled=False, credentials=CustomProviderCredentials(),
            configuration=CustomProviderConfiguration(delivery_methods=list(PROVIDER_DELIVERY_METHODS)),
        ), write=True)

    async def delete_phone_provider(self, provider_id: str) -> None:
        await self.api.call("DELETE phone provider",
                            lambda: self.sdk.branding.phone.providers.delete(provider_id), write=True)

    # --- hooks ---------------------------------------------------------------------------------

    async def list_hooks(self) -> list[ObservedHook]:
        found: list[ObservedHook] = []
        for page in range(_MAX_PAGES):
            pager = await self.api.call(
                f"GET hooks?triggerId={HOOK_TRIGGER}",
                lambda page=page: self.sdk.hooks.list(trigger_id=HOOK_TRIGGER, page=page,
                                                      per_page=_PAGE, include_totals=True))
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
