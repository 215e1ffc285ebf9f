"""Actions: drafts that build for a while, immutable deployed versions, trigger bindings."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from . import validation as v
from .clock import Clock, iso
from .errors import bad_request, conflict, not_found, payload_error

# Trigger id -> versions Auth0 accepts for it.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "post-login": ("v1", "v2", "v3"),
    "credentials-exchange": ("v1", "v2"),
    "pre-user-registration": ("v1", "v2"),
    "post-user-registration": ("v1", "v2"),
    "post-change-password": ("v1", "v2"),
    "send-phone-message": ("v1", "v2"),
    "custom-phone-provider": ("v1",),
    "custom-email-provider": ("v1",),
    "password-reset-post-challenge": ("v1",),
}
RUNTIMES = ("node12", "node16", "node18", "node18-actions", "node22")
DEFAULT_RUNTIME = "node22"
# Packages the emulated build can install (there is no npm here); any other dependency fails
# the build as an unknown package would on a real tenant.
KNOWN_PACKAGES = frozenset({"axios", "lodash", "uuid", "node-fetch", "libphonenumber-js",
                            "twilio", "@aws-sdk/client-sns"})
# Only one action may be bound to these (Auth0 runs exactly one provider action).
SINGLE_BINDING_TRIGGERS = frozenset({"custom-phone-provider", "custom-email-provider"})
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CREATE_KEYS = frozenset(
    {"name", "supported_triggers", "code", "dependencies", "runtime", "secrets", "modules",
     "deploy"})
_UPDATE_KEYS = _CREATE_KEYS - {"deploy"}
NOT_BUILT = "A draft must be in the 'built' state before it can be deployed."
# Auth0's Actions limitations (docs "Actions Limitations" and the entity limit policy). The docs
# give the numbers but not the answers when one is passed: the emulator refuses with a 400 naming
# the limit (the strict reading), except for versions, where the docs say the oldest is deleted.
MAX_ACTIONS_PER_TENANT = 100
MAX_VERSIONS_PER_ACTION = 50
MAX_BINDINGS_PER_TRIGGER = 20
MAX_SECRETS_PER_ACTION = 30
MAX_SECRET_NAME = 128
MAX_SECRET_VALUE = 4096
MAX_DEPENDENCIES = 10
MAX_CODE_BYTES = 100_000  # "100 kB": read as 1000-byte kilobytes, the stricter
SyntaxCheck = Callable[[str], "str | None"]


@dataclass
class Secret:
    value: str
    updated_at: float


@dataclass
class Version:
    id: str
    number: int
    code: str
    runtime: str
    dependencies: list[dict[str, str]]
    secrets: dict[str, Secret]
    supported_triggers: list[dict[str, str]]
    created_at: float
    deploy_at: float  # deploys are asynchronous: the version serves from this moment on


@dataclass
class Action:
    id: str
    name: str
    supported_triggers: list[dict[str, str]]
    code: str
    runtime: str
    dependencies: list[dict[str, str]]
    secrets: dict[str, Secret]
    created_at: float
    updated_at: float
    built_at: float  # when the current draft finishes (or finished) building
    clock: Clock = field(repr=False)
    build_started: float = 0.0
    build_errors: list[dict[str, str]] = field(default_factory=list)
    build_retried: bool = False  # the builder failed once and retries (status "retrying")
    versions: list[Version] = field(default_factory=list)

    def trigger_ids(self) -> set[str]:
        return {t["id"] for t in self.supported_triggers}

    def deployed(self) -> Version | None:
        """The version that serves now: the newest whose asynchronous deploy has finished."""
        now = self.clock()
        done = [ver for ver in self.versions if ver.deploy_at <= now]
        return max(done, key=lambda ver: ver.number) if done else None

    def deploying(self) -> bool:
        now = self.clock()
        return any(ver.deploy_at > now for ver in self.versions)

    def status(self, now: float) -> str:
        """pending -> building -> packaged -> built | failed over ``build_seconds``, as real
        tenants report it; a retried build shows ``retrying`` in place of ``packaged``."""
        quarter = (self.built_at - self.build_started) / 4
        if now < self.build_started + quarter:
            return "pending"
        if now < self.build_started + 2 * quarter:
            return "building"
        if now < self.built_at:
            return "retrying" if self.build_retried else "packaged"
        return "failed" if self.build_errors else "built"

    def all_changes_deployed(self) -> bool:
        """The draft is what serves, and no deploy is still under way (real tenants say false
        in the deploy answer)."""
        return self.draft_matches(self.deployed()) and not self.deploying()

    def draft_matches(self, version: Version | None) -> bool:
        if version is None:
            return False
        return (
            version.code == self.code
            and version.runtime == self.runtime
            and version.dependencies == self.dependencies
            and version.supported_triggers == self.supported_triggers
            and {k: s.value for k, s in version.secrets.items()}
            == {k: s.value for k, s in self.secrets.items()}
        )


@dataclass
class Binding:
    id: str
    trigger_id: str
    action_id: str
    display_name: str
    created_at: float
    updated_at: float


class ActionStore:
    def __init__(self, clock: Clock, build_seconds: float, deploy_seconds: float = 0.5) -> None:
        self._clock = clock
        self.build_seconds = build_seconds
        self.deploy_seconds = deploy_seconds
        self.build_failure: str | None = None  # a fault: every build fails with this message
        self.build_retries = 0  # a fault: this many next builds retry once (and take twice as long)
        self.actions: dict[str, Action] = {}
        self.bindings: dict[str, list[Binding]] = {}

    # ---- actions -------------------------------------------------------------------------
    def get(self, action_id: str) -> Action:
        action = self.actions.get(action_id)
        if action is None:
            raise not_found("The action does not exist.", "action_not_found")
        return action

    def _start_build(self, action: Action, now: float, syntax_error: str | None) -> None:
        action.build_retried = self.build_retries > 0
        self.build_retries = max(0, self.build_retries - 1)
        took = self.build_seconds * (2 if action.build_retried else 1)
        action.build_started, action.built_at = now, now + took
        errors = []
        if syntax_error:
            errors.append({"id": "build_error", "msg": syntax_error})
        if self.build_failure:
            errors.append({"id": "build_error", "msg": self.build_failure})
        for dep in action.dependencies:
            if dep["name"] not in KNOWN_PACKAGES:
                errors.append({"id": "dependency_error", "msg": f"Failed to install dependency "
                               f"{dep['name']}@{dep['version']}: package not found"})
        action.build_errors = errors

    def create(self, body: Any, check: SyntaxCheck = lambda code: None) -> Action:
        data = v.body_object(body, _CREATE_KEYS, required=("name", "supported_triggers"))
        name = v.string(data["name"], "name")
        if any(a.name == name for a in self.actions.values()):
            raise conflict(f"An action with the name '{name}' already exists.")
        if len(self.actions) >= MAX_ACTIONS_PER_TENANT:
            raise bad_request(f"Entity limit reached: a tenant may have at most {MAX_ACTIONS_PER_TENANT} "
                              "actions (deployed or not); delete one first.")
        now = self._clock()
        action = Action(
            id=str(uuid.uuid4()),
            name=name,
            supported_triggers=_triggers(data["supported_triggers"]),
            code=_code(data.get("code", "")),
            runtime=_runtime(data.get("runtime", DEFAULT_RUNTIME)),
            dependencies=_dependencies(data.get("dependencies", [])),
            secrets=_new_secrets(data.get("secrets", []), {}, now),
            created_at=now,
            updated_at=now,
            built_at=now,
            clock=self._clock,
        )
        self._start_build(action, now, check(action.code))
        self.actions[action.id] = action
        if data.get("deploy") is True:
            self._make_version(action, now)
        return action

    def update(self, action_id: str, body: Any, check: SyntaxCheck = lambda code: None) -> Action:
        action = self.get(action_id)
        data = v.body_object(body, _UPDATE_KEYS)
        now = self._clock()
        if "name" in data:
            name = v.string(data["name"], "name")
            if any(a.name == name and a.id != action.id for a in self.actions.values()):
                raise conflict(f"An action with the name '{name}' already exists.")
            action.name = name
        if "supported_triggers" in data:
            action.supported_triggers = _triggers(data["supported_triggers"])
        if "code" in data:
            action.code = _code(data["code"])
        if "runtime" in data:
            action.runtime = _runtime(data["runtime"])
        if "dependencies" in data:
            action.dependencies = _dependencies(data["dependencies"])
        if "secrets" in data:
            action.secrets = _new_secrets(data["secrets"], action.secrets, now)
        action.updated_at = now
        self._start_build(action, now, check(action.code))
        return action

    def delete(self, action_id: str, force: bool) -> None:
        action = self.get(action_id)
        bound = [t for t, chain in self.bindings.items() if any(b.action_id == action.id
                                                                  for b in chain)]
        if bound and not force:
            raise conflict(
                f"The action is bound to the trigger(s) {', '.join(sorted(bound))}; remove the "
                "bindings first or delete with force=true.")
        for trigger in bound:
            self.bindings[trigger] = [b for b in self.bindings[trigger]
                                      if b.action_id != action.id]
        del self.actions[action.id]

    def deploy(self, action_id: str) -> Version:
        action = self.get(action_id)
        now = self._clock()
        if action.status(now) != "built":
            raise bad_request(NOT_BUILT)
        return self._make_version(action, now)

    def deploy_version(self, action_id: str, version_id: str) -> Version:
        """Roll back: a new version whose content is an earlier one's."""
        action = self.get(action_id)
        old = self.get_version(action_id, version_id)
        now = self._clock()
        version = Version(
            id=str(uuid.uuid4()), number=_next_number(action), code=old.code,
            runtime=old.runtime, dependencies=list(old.dependencies), secrets=dict(old.secrets),
            supported_triggers=list(old.supported_triggers), created_at=now,
            deploy_at=now + self.deploy_seconds,
        )
        _add_version(action, version)
        return version

    def get_version(self, action_id: str, version_id: str) -> Version:
        action = self.get(action_id)
        for version in action.versions:
            if version.id == version_id:
                return version
        raise not_found("The version does not exist.", "action_version_not_found")

    def _make_version(self, action: Action, now: float) -> Version:
        version = Version(
            id=str(uuid.uuid4()), number=_next_number(action), code=action.code,
            runtime=action.runtime, dependencies=list(action.dependencies),
            secrets=dict(action.secrets), supported_triggers=list(action.supported_triggers),
            created_at=now, deploy_at=now + self.deploy_seconds,
        )
        _add_version(action, version)
        action.updated_at = now
        return version

    def deployed_for_trigger(self, trigger_id: str) -> list[Action]:
        """Deployed actions supporting ``trigger_id``, most recently deployed first."""
        found = [a for a in self.actions.values()
                 if trigger_id in a.trigger_ids() and a.deployed() is not None]
        return sorted(found, key=lambda a: a.deployed().created_at, reverse=True)  # type: ignore

    # ---- bindings ------------------------------------------------------------------------
    def list_bindings(self, trigger_id: str) -> list[Binding]:
        _known_trigger(trigger_id)
        return list(self.bindings.get(trigger_id, []))

    def replace_bindings(self, trigger_id: str, body: Any) -> list[Binding]:
        _known_trigger(trigger_id)
        data = v.body_object(body, frozenset({"bindings"}), required=("bindings",))
        current = {b.id: b for b in self.bindings.get(trigger_id, [])}
        now = self._clock()
        chain: list[Binding] = []
        for index, item in enumerate(v.array(data["bindings"], "bindings")):
            entry = v.body_object(item, frozenset({"ref", "display_name", "secrets"}),
                                  required=("ref",))
            ref = v.body_object(entry["ref"], frozenset({"type", "value"}),
                                required=("type", "value"))
            kind = v.string(ref["type"], f"bindings[{index}].ref.type")
            value = v.string(ref["value"], f"bindings[{index}].ref.value")
            if kind == "binding_id":
                if value not in current:
                    raise bad_request(f"Binding '{value}' does not exist on trigger "
                                      f"'{trigger_id}'.")
                action = self.get(current[value].action_id)
            elif kind == "action_id":
                action = self._bindable(self.actions.get(value), value)
            elif kind == "action_name":
                match = next((a for a in self.actions.values() if a.name == value), None)
                action = self._bindable(match, value)
            else:
                raise payload_error(f"No enum match for: {kind} (bindings[{index}].ref.type)")
            if trigger_id not in action.trigger_ids():
                raise bad_request(f"Action '{action.name}' does not support trigger "
                                  f"'{trigger_id}'.")
            existing = current.get(value) if kind == "binding_id" else None
            display = entry.get("display_name", existing.display_name if existing
                                else action.name)
            # Every PATCH issues new binding ids, even for bindings that stay.
            chain.append(Binding(
                id=str(uuid.uuid4()), trigger_id=trigger_id, action_id=action.id,
                display_name=v.string(display, f"bindings[{index}].display_name"),
                created_at=now, updated_at=now,
            ))
        if trigger_id in SINGLE_BINDING_TRIGGERS and len(chain) > 1:
            raise bad_request(f"Only one action can be bound to the trigger '{trigger_id}'.")
        if len(chain) > MAX_BINDINGS_PER_TRIGGER:
            raise bad_request(f"Entity limit reached: a trigger may have at most {MAX_BINDINGS_PER_TRIGGER} "
                              f"bound actions ({len(chain)} given for '{trigger_id}').")
        self.bindings[trigger_id] = chain
        return list(chain)

    def _bindable(self, action: Action | None, ref: str) -> Action:
        if action is None:
            raise not_found(f"Action '{ref}' not found.", "action_not_found")
        if action.deployed() is None:
            if action.deploying():  # right after a deploy, before it finished
                raise conflict(f"Action '{action.name}' has no deployed version yet; the "
                               "deployment is still in progress.")
            raise bad_request(f"Action '{action.name}' must be deployed before it can be "
                              "bound.")
        return action

    # ---- JSON shapes ---------------------------------------------------------------------
    def action_json(self, action: Action) -> dict[str, Any]:
        now = self._clock()
        status = action.status(now)
        deployed = action.deployed()
        data: dict[str, Any] = {
            "id": action.id,
            "name": action.name,
            "supported_triggers": action.supported_triggers,
            "created_at": iso(action.created_at),
            "updated_at": iso(action.updated_at),
            "code": action.code,
            "dependencies": action.dependencies,
            "runtime": action.runtime,
            "status": status,
            "secrets": _secrets_json(action.secrets),
        }
        if status == "failed":
            data["errors"] = action.build_errors
        if action.versions:
            latest = max(action.versions, key=lambda ver: ver.number)
            data["current_version"] = {
                "id": latest.id, "code": latest.code, "runtime": latest.runtime,
                "status": "BUILT", "number": latest.number,
                "build_time": iso(latest.created_at), "created_at": iso(latest.created_at),
                "updated_at": iso(latest.created_at)}
        if deployed is not None:
            data["deployed_version"] = self._version_fields(action, deployed)
            data["deployed_version"]["built_at"] = iso(deployed.created_at)
        data["all_changes_deployed"] = action.all_changes_deployed()
        return data

    def _version_fields(self, action: Action, version: Version) -> dict[str, Any]:
        deployed = action.deployed()
        return {
            "code": version.code,
            "dependencies": version.dependencies,
            "id": version.id,
            "deployed": deployed is not None and deployed.number == version.number,
            "number": version.number,
            "secrets": _secrets_json(version.secrets),
            "status": "built",
            "created_at": iso(version.created_at),
            "updated_at": iso(version.created_at),
            "runtime": version.runtime,
            "supported_triggers": version.supported_triggers,
        }

    def version_json(self, action: Action, version: Version) -> dict[str, Any]:
        """A version as the deploy and versions endpoints answer (with its action)."""
        data = self._version_fields(action, version)
        data["action"] = {"id": action.id, "name": action.name,
                          "supported_triggers": action.supported_triggers,
                          "created_at": iso(action.created_at),
                          "updated_at": iso(action.updated_at),
                          "all_changes_deployed": action.all_changes_deployed()}
        return data

    def binding_json(self, binding: Binding) -> dict[str, Any]:
        action = self.actions.get(binding.action_id)
        return {
            "id": binding.id,
            "trigger_id": binding.trigger_id,
            "display_name": binding.display_name,
            "action": self.action_json(action) if action else None,
            "created_at": iso(binding.created_at),
            "updated_at": iso(binding.updated_at),
        }


def _known_trigger(trigger_id: str) -> None:
    if trigger_id not in TRIGGERS:
        raise not_found(f"Trigger '{trigger_id}' does not exist.", "trigger_not_found")


def _triggers(value: Any) -> list[dict[str, str]]:
    items = v.array(value, "supported_triggers")
    if not items:
        raise payload_error("Array is too short (0), minimum 1 (supported_triggers)")
    triggers = []
    for item in items:
        entry = v.body_object(item, frozenset({"id", "version", "status", "runtimes",
                                               "default_runtime", "compatible_triggers",
                                               "binding_policy"}), required=("id",))
        trigger_id = v.string(entry["id"], "supported_triggers.id")
        if trigger_id not in TRIGGERS:
            raise payload_error(f"No enum match for: {trigger_id} (supported_triggers.id)")
        version = entry.get("version", TRIGGERS[trigger_id][-1])
        if version not in TRIGGERS[trigger_id]:
            raise bad_request(f"Version '{version}' of trigger '{trigger_id}' does not exist.")
        triggers.append({"id": trigger_id, "version": version})
    return triggers


def _runtime(value: Any) -> str:
    runtime = v.string(value, "runtime")
    if runtime not in RUNTIMES:
        raise payload_error(f"No enum match for: {runtime} (runtime)")
    return runtime


def _code(value: Any) -> str:
    code = v.string(value, "code", allow_empty=True)
    if len(code.encode()) > MAX_CODE_BYTES:
        raise bad_request(f"The action's code is {len(code.encode())} bytes; an action may have at "
                          f"most {MAX_CODE_BYTES} bytes (100 kB).")
    return code


def _next_number(action: Action) -> int:
    return max((ver.number for ver in action.versions), default=0) + 1


def _add_version(action: Action, version: Version) -> None:
    """Past the limit the oldest versions are deleted (Auth0's documented behaviour)."""
    action.versions.append(version)
    action.versions.sort(key=lambda ver: ver.number)
    del action.versions[:-MAX_VERSIONS_PER_ACTION]


def _dependencies(value: Any) -> list[dict[str, str]]:
    items = v.array(value, "dependencies")
    if len(items) > MAX_DEPENDENCIES:
        raise bad_request(f"An action may have at most {MAX_DEPENDENCIES} npm modules ({len(items)} given).")
    deps = []
    for item in items:
        entry = v.body_object(item, frozenset({"name", "version", "registry_url"}),
                              required=("name", "version"))
        deps.append({"name": v.string(entry["name"], "dependencies.name"),
                     "version": v.string(entry["version"], "dependencies.version")})
    return deps


def _new_secrets(value: Any, current: dict[str, Secret], now: float) -> dict[str, Secret]:
    """The full new secret set. A listed name without a value keeps its current value (what the
    dashboard sends, as it cannot read values back); names left out are removed."""
    result: dict[str, Secret] = {}
    for item in v.array(value, "secrets"):
        entry = v.body_object(item, frozenset({"name", "value", "updated_at"}),
                              required=("name",))
        name = v.string(entry["name"], "secrets.name")
        if not _SECRET_NAME.match(name):
            raise payload_error(f"String does not match pattern: {_SECRET_NAME.pattern} "
                                "(secrets.name)")
        if name in result:
            raise bad_request(f"Secret '{name}' is listed more than once.")
        if len(name) > MAX_SECRET_NAME:
            raise bad_request(f"A secret's name may have at most {MAX_SECRET_NAME} characters "
                              f"({len(name)} given).")
        if "value" in entry:
            value_text = v.string(entry["value"], "secrets.value", allow_empty=True)
            if len(value_text) > MAX_SECRET_VALUE:
                raise bad_request(f"Secret '{name}': a value may have at most {MAX_SECRET_VALUE} "
                                  f"characters ({len(value_text)} given).")
            old = current.get(name)
            keep = old is not None and old.value == value_text
            result[name] = old if keep else Secret(value_text, now)  # type: ignore[assignment]
        elif name in current:
            result[name] = current[name]
        else:
            raise payload_error(f"Missing required property: value (secrets.{name})")
    if len(result) > MAX_SECRETS_PER_ACTION:
        raise bad_request(f"An action may have at most {MAX_SECRETS_PER_ACTION} secrets ({len(result)} given).")
    return result


def _secrets_json(secrets: dict[str, Secret]) -> list[dict[str, str]]:
    return [{"name": name, "updated_at": iso(s.updated_at)} for name, s in secrets.items()]
