"""Legacy Hooks: one enabled hook per trigger, secrets that read back as a placeholder."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from . import validation as v
from .errors import bad_request, conflict, not_found, payload_error

HOOK_TRIGGERS = (
    "credentials-exchange", "pre-user-registration", "post-user-registration",
    "post-change-password", "send-phone-message",
)
VALUE_NOT_SHOWN = "_VALUE_NOT_SHOWN_"
MAX_SECRETS = 20
_NAME = re.compile(r"^[a-zA-Z0-9]([ \-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CREATE_KEYS = frozenset({"name", "script", "enabled", "dependencies", "triggerId"})
_UPDATE_KEYS = frozenset({"name", "script", "enabled", "dependencies"})


@dataclass
class Hook:
    id: str
    name: str
    script: str
    trigger_id: str
    enabled: bool
    dependencies: dict[str, str]
    secrets: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "script": self.script,
                "triggerId": self.trigger_id, "enabled": self.enabled,
                "dependencies": self.dependencies}


def _hook_id() -> str:
    return "01" + "".join(random.choices(_ULID_ALPHABET, k=24))


class HookStore:
    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}

    def get(self, hook_id: str) -> Hook:
        hook = self.hooks.get(hook_id)
        if hook is None:
            raise not_found("Hook not found", "inexistent_hook")
        return hook

    def enabled_for(self, trigger_id: str) -> Hook | None:
        return next((h for h in self.hooks.values()
                     if h.trigger_id == trigger_id and h.enabled), None)

    def create(self, body: Any) -> Hook:
        data = v.body_object(body, _CREATE_KEYS, required=("name", "script", "triggerId"))
        name = _name(data["name"])
        trigger_id = v.string(data["triggerId"], "triggerId")
        if trigger_id not in HOOK_TRIGGERS:
            raise payload_error(f"No enum match for: {trigger_id} (triggerId)")
        if any(h.name == name for h in self.hooks.values()):
            raise conflict(f"A hook with name '{name}' already exists.", "hook_conflict")
        enabled = v.boolean(data.get("enabled", False), "enabled")
        # A second hook for a trigger that already has an enabled one is created disabled.
        if enabled and self.enabled_for(trigger_id) is not None:
            enabled = False
        hook = Hook(_hook_id(), name, v.string(data["script"], "script"), trigger_id, enabled,
                    _dependencies(data.get("dependencies", {})))
        self.hooks[hook.id] = hook
        return hook

    def update(self, hook_id: str, body: Any) -> Hook:
        hook = self.get(hook_id)
        data = v.body_object(body, _UPDATE_KEYS)
        if "name" in data:
            name = _name(data["name"])
            if any(h.name == name and h.id != hook.id for h in self.hooks.values()):
                raise conflict(f"A hook with name '{name}' already exists.", "hook_conflict")
            hook.name = name
        if "script" in data:
            hook.script = v.string(data["script"], "script")
        if "dependencies" in data:
            hook.dependencies = _dependencies(data["dependencies"])
        if "enabled" in data:
            enabled = v.boolean(data["enabled"], "enabled")
            other = self.enabled_for(hook.trigger_id)
            if enabled and other is not None and other.id != hook.id:
                raise conflict(
                    f"Only one hook can be enabled for the trigger '{hook.trigger_id}'; "
                    f"'{other.name}' is enabled.", "hook_conflict")
            hook.enabled = enabled
        return hook

    def delete(self, hook_id: str) -> None:
        self.get(hook_id)
        del self.hooks[hook_id]

    # ---- secrets -------------------------------------------------------------------------
    def get_secrets(self, hook_id: str) -> dict[str, str]:
        return {name: VALUE_NOT_SHOWN for name in self.get(hook_id).secrets}

    def add_secrets(self, hook_id: str, body: Any) -> None:
        hook = self.get(hook_id)
        new = _secret_map(body)
        for name in new:
            if name in hook.secrets:
                raise conflict(f"Secret '{name}' already exists.", "hook_secret_conflict")
        if len(hook.secrets) + len(new) > MAX_SECRETS:
            raise bad_request(f"A hook can have at most {MAX_SECRETS} secrets.")
        hook.secrets.update(new)

    def update_secrets(self, hook_id: str, body: Any) -> None:
        hook = self.get(hook_id)
        changes = _secret_map(body)
        for name in changes:
            if name not in hook.secrets:
                raise not_found(f"Secret '{name}' does not exist.", "hook_secret_not_found")
        # Writing the placeholder back stores the placeholder: the trap users fall into.
        hook.secrets.update(changes)

    def delete_secrets(self, hook_id: str, body: Any) -> None:
        hook = self.get(hook_id)
        names = v.array(body, "body")
        for name in names:
            v.string(name, "secret name")
            if name not in hook.secrets:
                raise not_found(f"Secret '{name}' does not exist.", "hook_secret_not_found")
        for name in names:
            hook.secrets.pop(name, None)


def _name(value: Any) -> str:
    name = v.string(value, "name")
    if not _NAME.match(name):
        raise payload_error(f"String does not match pattern: {_NAME.pattern} (name)")
    return name


def _dependencies(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise payload_error("Expected type object (dependencies)")
    return {str(k): v.string(val, f"dependencies.{k}") for k, val in value.items()}


def _secret_map(body: Any) -> dict[str, str]:
    if not isinstance(body, dict) or not body:
        raise payload_error("Expected a non-empty object of secret names to values")
    return {str(k): v.string(val, f"secret {k}", allow_empty=True) for k, val in body.items()}
