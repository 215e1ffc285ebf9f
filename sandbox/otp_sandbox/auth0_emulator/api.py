"""The HTTP face of one tenant: ``/oauth/token``, ``/api/v2/...`` and ``/__sandbox/...``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from .actions import TRIGGERS
from .errors import RATE_LIMITED, ApiError
from .events import DELIVERY_METHODS as PHONE_DELIVERY_METHODS, PhoneMessage
from .runner import NodeRunner, PhoneMessageResult
from .tenant import PHONE_TRIGGERS, LoggedRequest, Tenant
from .tokens import Grant, OAuthError, require_scope
from .validation import page_params, query_bool

API_PREFIX = "/api/v2"
# Auth0 runs a custom-phone-provider action again after api.notification.retry(), up to 5 times.
MAX_RETRIES = 5
_log = logging.getLogger("otp_sandbox.auth0_emulator")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TENANT_KEY = web.AppKey("tenant", Tenant)
_RUNNER_KEY = web.AppKey("runner", NodeRunner)


@dataclass
class Call:
    """What a Management API handler gets: the tenant, the request and the parsed body."""

    tenant: Tenant
    request: web.Request
    body: Any
    runner: NodeRunner

    async def syntax_error(self) -> str | None:
        """What the build would report for the code in this request's body (None: fine)."""
        code = self.body.get("code") if isinstance(self.body, dict) else None
        return await self.runner.check_syntax(code) if isinstance(code, str) and code else None

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    @property
    def scopes(self) -> frozenset[str]:
        """The scopes of the caller's token."""
        return self.request["grant"].scopes


Handler = Callable[[Call], Awaitable[web.Response]]
_ROUTES: list[tuple[str, str, str, Handler]] = []


def route(method: str, path: str, scope: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ROUTES.append((method, API_PREFIX + path, scope, handler))
        return handler
    return register


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _error(err: ApiError) -> web.Response:
    return _json(err.body(), err.status)


# ---- actions ------------------------------------------------------------------------------
@route("GET", "/actions/actions", "read:actions")
async def list_actions(call: Call) -> web.Response:
    store, query = call.tenant.actions, call.request.query
    page, per_page = page_params(query)
    trigger, name = query.get("triggerId"), query.get("actionName")
    deployed, installed = query_bool(query, "deployed"), query_bool(query, "installed")
    found = [a for a in store.actions.values()
             if (not trigger or trigger in a.trigger_ids())
             and (not name or a.name == name)
             and (deployed is None or (a.deployed() is not None) == deployed)
             and installed is not True]
    chunk = found[page * per_page:(page + 1) * per_page]
    return _json({"actions": [store.action_json(a) for a in chunk], "total": len(found),
                  "per_page": per_page})


@route("POST", "/actions/actions", "create:actions")
async def create_action(call: Call) -> web.Response:
    store, error = call.tenant.actions, await call.syntax_error()
    return _json(store.action_json(store.create(call.body, lambda code: error)), 201)


@route("GET", "/actions/actions/{id}", "read:actions")
async def get_action(call: Call) -> web.Response:
    store = call.tenant.actions
    return _json(store.action_json(store.get(call.param("id"))))


@route("PATCH", "/actions/actions/{id}", "update:actions")
async def update_action(call: Call) -> web.Response:
    store, error = call.tenant.actions, await call.syntax_error()
    return _json(store.action_json(store.update(call.param("id"), call.body,
                                                lambda code: error)))


@route("DELETE", "/actions/actions/{id}", "delete:actions")
async def delete_action(call: Call) -> web.Response:
    force = query_bool(call.request.query, "force") is True
    call.tenant.actions.delete(call.param("id"), force)
    return web.Response(status=204)


@route("POST", "/actions/actions/{id}/deploy", "create:actions")
async def deploy_action(call: Call) -> web.Response:
    store = call.tenant.actions
    version = store.deploy(call.param("id"))
    return _json(store.version_json(store.get(call.param("id")), version), 200)


@route("GET", "/actions/actions/{id}/versions", "read:actions")
async def list_versions(call: Call) -> web.Response:
    store = call.tenant.actions
    action = store.get(call.param("id"))
    page, per_page = page_params(call.request.query)
    versions = sorted(action.versions, key=lambda ver: ver.number, reverse=True)
    chunk = versions[page * per_page:(page + 1) * per_page]
    return _json({"versions": [store.version_json(action, ver) for ver in chunk],
                  "total": len(versions), "page": page, "per_page": per_page})


@route("GET", "/actions/actions/{id}/versions/{version}", "read:actions")
async def get_version(call: Call) -> web.Response:
    store = call.tenant.actions
    version = store.get_version(call.param("id"), call.param("version"))
    return _json(store.version_json(store.get(call.param("id")), version))


@route("POST", "/actions/actions/{id}/versions/{version}/deploy", "create:actions")
async def deploy_version(call: Call) -> web.Response:
    store = call.tenant.actions
    version = store.deploy_version(call.param("id"), call.param("version"))
    return _json(store.version_json(store.get(call.param("id")), version))


@route("GET", "/actions/triggers", "read:actions")
async def list_triggers(call: Call) -> web.Response:
    triggers = []
    for trigger_id, versions in TRIGGERS.items():
        for version in reversed(versions):
            current = version == versions[-1]
            triggers.append({
                "id": trigger_id, "version": version,
                "status": "CURRENT" if current else "DEPRECATED",
                "runtimes": ["node18-actions", "node22"] if current else ["node22"],
                "default_runtime": "node22" if current else "node12",
                "binding_policy": "trigger-bound", "compatible_triggers": []})
    return _json({"triggers": triggers})


@route("GET", "/actions/triggers/{trigger}/bindings", "read:actions")
async def list_bindings(call: Call) -> web.Response:
    store = call.tenant.actions
    chain = store.list_bindings(call.param("trigger"))
    page, per_page = page_params(call.request.query, default_per_page=20)
    chunk = chain[page * per_page:(page + 1) * per_page]
    return _json({"bindings": [store.binding_json(b) for b in chunk], "per_page": per_page})


@route("PATCH", "/actions/triggers/{trigger}/bindings", "update:actions")
async def update_bindings(call: Call) -> web.Response:
    store = call.tenant.actions
    chain = store.replace_bindings(call.param("trigger"), call.body)
    return _json({"bindings": [store.binding_json(b) for b in chain]})


# ---- hooks --------------------------------------------------------------------------------
@route("GET", "/hooks", "read:hooks")
async def list_hooks(call: Call) -> web.Response:
    query = call.request.query
    page, per_page = page_params(query)
    enabled, trigger = query_bool(query, "enabled"), query.get("triggerId")
    found = [h.to_json() for h in call.tenant.hooks.hooks.values()
             if (enabled is None or h.enabled == enabled)
             and (not trigger or h.trigger_id == trigger)]
    fields = [f for f in query.get("fields", "").split(",") if f]
    if fields:
        found = [{k: h[k] for k in fields if k in h} for h in found]
    chunk = found[page * per_page:(page + 1) * per_page]
    if query_bool(query, "include_totals") is True:
        return _json({"hooks": chunk, "start": page * per_page, "limit": per_page,
                      "total": len(found)})
    return _json(chunk)


@route("POST", "/hooks", "create:hooks")
async def create_hook(call: Call) -> web.Response:
    return _json(call.tenant.hooks.create(call.body).to_json(), 201)


@route("GET", "/hooks/{id}", "read:hooks")
async def get_hook(call: Call) -> web.Response:
    data = call.tenant.hooks.get(call.param("id")).to_json()
    fields = [f for f in call.request.query.get("fields", "").split(",") if f]
    return _json({k: data[k] for k in fields if k in data} if fields else data)


@route("PATCH", "/hooks/{id}", "update:hooks")
async def update_hook(call: Call) -> web.Response:
    return _json(call.tenant.hooks.update(call.param("id"), call.body).to_json())


@route("DELETE", "/hooks/{id}", "delete:hooks")
async def delete_hook(call: Call) -> web.Response:
    call.tenant.hooks.delete(call.param("id"))
    return web.Response(status=204)


@route("GET", "/hooks/{id}/secrets", "read:hooks")
async def get_hook_secrets(call: Call) -> web.Response:
    return _json(call.tenant.hooks.get_secrets(call.param("id")))


# Auth0's API reference: adding secrets needs update:hooks (not create:hooks), deleting them
# delete:hooks.
@route("POST", "/hooks/{id}/secrets", "update:hooks")
async def add_hook_secrets(call: Call) -> web.Response:
    call.tenant.hooks.add_secrets(call.param("id"), call.body)
    return _json({}, 201)


@route("PATCH", "/hooks/{id}/secrets", "update:hooks")
async def update_hook_secrets(call: Call) -> web.Response:
    call.tenant.hooks.update_secrets(call.param("id"), call.body)
    return _json({}, 201)


@route("DELETE", "/hooks/{id}/secrets", "delete:hooks")
async def delete_hook_secrets(call: Call) -> web.Response:
    call.tenant.hooks.delete_secrets(call.param("id"), call.body)
    return web.Response(status=204)


# ---- phone providers and the MFA SMS provider --------------------------------------------
@route("GET", "/branding/phone/providers", "read:phone_providers")
async def list_providers(call: Call) -> web.Response:
    store = call.tenant.providers
    disabled = query_bool(call.request.query, "disabled")
    found = [p for p in store.providers.values() if disabled is None or p.disabled == disabled]
    # The list shows "credentials": null; single-provider answers leave the key out.
    return _json({"providers": [{**store.to_json(p), "credentials": None} for p in found]})


@route("POST", "/branding/phone/providers", "create:phone_providers")
async def create_provider(call: Call) -> web.Response:
    store = call.tenant.providers
    return _json(store.to_json(store.create(call.body)), 201)


@route("GET", "/branding/phone/providers/{id}", "read:phone_providers")
async def get_provider(call: Call) -> web.Response:
    store = call.tenant.providers
    return _json(store.to_json(store.get(call.param("id"))))


@route("PATCH", "/branding/phone/providers/{id}", "update:phone_providers")
async def update_provider(call: Call) -> web.Response:
    store = call.tenant.providers
    return _json(store.to_json(store.update(call.param("id"), call.body)))


@route("DELETE", "/branding/phone/providers/{id}", "delete:phone_providers")
async def delete_provider(call: Call) -> web.Response:
    call.tenant.providers.delete(call.param("id"))
    return web.Response(status=204)


# What Auth0 puts in the test notification of ``/try`` is not documented. Chosen, the stricter
# way for the code that receives it: a fixed text, no ``code``, message_type otp_verify (the one
# every custom-phone-provider action handles), English; nothing in it varies between two tries.
TEST_MESSAGE_TEXT = "This is a test message from Auth0: your phone provider is set up."
TEST_FAILED = "phone_provider_test_failed"  # errorCode of a test that did not go out (chosen)


@route("POST", "/branding/phone/providers/{id}/try", "create:phone_providers")
async def try_provider(call: Call) -> web.Response:
    """Send a test message through the provider (the Dashboard's "Send Test Message"). For a
    ``custom`` provider the action bound to custom-phone-provider runs, through the tenant's
    own route and the Node runner, exactly as for a phone message. Not documented: whether the
    answer waits for the action and what a failing action answers. Chosen, the stricter way for
    a caller: the answer waits; if nothing runs, the action drops, asks to retry (a test is not
    retried) or fails, the try answers 400 ``phone_provider_test_failed`` with the reason, and a
    caller can only tell "sent" from a 2xx. Success: 202 ``{code: 202, message}`` (the SDK's
    ``{code, message}``; a caller should accept any 2xx). The notification is an otp_verify one,
    so the tenant's MFA SMS settings apply to it as to any (stricter than a provider-only test)."""
    provider = call.tenant.providers.get(call.param("id"))  # 404 phone_provider_not_found
    body = call.body if isinstance(call.body, dict) else None
    if body is None:
        raise ApiError(400, "Payload validation error: expected an object with 'to'", "invalid_body")
    to, method = body.get("to"), body.get("delivery_method", "text")
    if not isinstance(to, str) or not _E164.match(to):
        raise ApiError(400, "Payload validation error: 'to' must be a phone number in E.164 format",
                       "invalid_body")
    if method not in PHONE_DELIVERY_METHODS:
        raise ApiError(400, "Payload validation error: 'delivery_method' must be text or voice",
                       "invalid_body")
    unknown = sorted(set(body) - {"to", "delivery_method"})
    if unknown:
        raise ApiError(400, f"Payload validation error: Additional properties not allowed: "
                       f"{', '.join(unknown)}", "invalid_body")
    if provider.name == "custom":
        message = PhoneMessage(recipient=to, text=TEST_MESSAGE_TEXT, code=None,
                               message_type="otp_verify", delivery_method=method)
        result = await _run(call.tenant, call.runner, message, call.tenant.runner_timeout_seconds, 0)
        if result.outcome != "success":
            raise ApiError(400, f"The test message was not sent ({result.outcome}): "
                           f"{result.reason or 'no reason given'}", TEST_FAILED)
    # other providers: Auth0 sends the message itself (nothing the emulator delivers)
    return _json({"code": 202, "message": "Phone notification sent"}, 202)


# ---- passwordless connections -------------------------------------------------------------
@route("GET", "/connections", "read:connections")
async def list_connections(call: Call) -> web.Response:
    query = call.request.query
    found = [c.to_json(call.scopes) for c in call.tenant.connections.listed(query.getall("strategy", []))]
    if "take" in query or "from" in query:  # checkpoint pagination: {connections, next?}
        start = int(query.get("from") or 0) if (query.get("from") or "0").isdigit() else 0
        take = min(max(int(query.get("take") or 50), 1), 100)
        chunk = found[start:start + take]
        body: dict[str, Any] = {"connections": chunk}
        if start + take < len(found):
            body["next"] = str(start + take)
        return _json(body)
    page, per_page = page_params(query)
    return _json(found[page * per_page:(page + 1) * per_page])


@route("GET", "/connections/{id}", "read:connections")
async def get_connection(call: Call) -> web.Response:
    return _json(call.tenant.connections.get(call.param("id")).to_json(call.scopes))


@route("PATCH", "/connections/{id}", "update:connections")
async def update_connection(call: Call) -> web.Response:
    return _json(call.tenant.connections.update(call.param("id"), call.body, call.scopes)
                 .to_json(call.scopes))


# ---- log streams (logstreams.py) ----------------------------------------------------------
@route("GET", "/log-streams", "read:log_streams")
async def list_log_streams(call: Call) -> web.Response:
    return _json([s.to_json() for s in call.tenant.log_streams.streams.values()])


@route("POST", "/log-streams", "create:log_streams")
async def create_log_stream(call: Call) -> web.Response:
    # A real tenant answers 200 here, not 201 (terraform-provider-auth0 recordings).
    return _json(call.tenant.log_streams.create(call.body, len(call.tenant.logs)).to_json(), 200)


@route("GET", "/log-streams/{id}", "read:log_streams")
async def get_log_stream(call: Call) -> web.Response:
    return _json(call.tenant.log_streams.get(call.param("id")).to_json())


@route("PATCH", "/log-streams/{id}", "update:log_streams")
async def update_log_stream(call: Call) -> web.Response:
    return _json(call.tenant.log_streams.update(call.param("id"), call.body).to_json())


@route("DELETE", "/log-streams/{id}", "delete:log_streams")
async def delete_log_stream(call: Call) -> web.Response:
    call.tenant.log_streams.delete(call.param("id"))
    return web.Response(status=204)


# ---- tenant settings and the MFA phone factor ---------------------------------------------
@route("GET", "/tenants/settings", "read:tenant_settings")
async def get_settings(call: Call) -> web.Response:
    fields = [f for f in call.request.query.get("fields", "").split(",") if f]
    return _json(call.tenant.phone.settings_json(fields))


@route("PATCH", "/tenants/settings", "update:tenant_settings")
async def patch_settings(call: Call) -> web.Response:
    return _json(call.tenant.phone.patch_settings(call.body))


@route("GET", "/guardian/factors", "read:guardian_factors")
async def list_factors(call: Call) -> web.Response:
    return _json(call.tenant.phone.factors_json())


@route("PUT", "/guardian/factors/{name}", "update:guardian_factors")
async def put_factor(call: Call) -> web.Response:
    return _json(call.tenant.phone.set_factor(call.param("name"), call.body))


@route("GET", "/guardian/factors/phone/message-types", "read:guardian_factors")
async def get_message_types(call: Call) -> web.Response:
    return _json({"message_types": call.tenant.phone.message_types})


@route("PUT", "/guardian/factors/phone/message-types", "update:guardian_factors")
async def put_message_types(call: Call) -> web.Response:
    return _json({"message_types": call.tenant.phone.set_message_types(call.body)})


@route("GET", "/guardian/factors/phone/selected-provider", "read:guardian_factors")
async def get_guardian_provider(call: Call) -> web.Response:
    return _json({"provider": call.tenant.phone.get_selected_provider()})


@route("PUT", "/guardian/factors/phone/selected-provider", "update:guardian_factors")
async def put_guardian_provider(call: Call) -> web.Response:
    return _json({"provider": call.tenant.phone.select_provider(call.body)})


@route("GET", "/guardian/policies", "read:mfa_policies")
async def get_mfa_policies(call: Call) -> web.Response:
    return _json(call.tenant.phone.mfa_policies)


@route("PUT", "/guardian/policies", "update:mfa_policies")
async def put_mfa_policies(call: Call) -> web.Response:
    return _json(call.tenant.phone.set_mfa_policies(call.body))


@route("PATCH", "/migrations", "update:tenant_settings")
async def patch_migrations(call: Call) -> web.Response:
    """Where Auth0 sets tenant flags such as legacy_mfa_phone_provider: not for client
    credentials (docs-v2 configure-unified-phone). The real body is not documented."""
    raise ApiError(403, "This endpoint is not available to client credentials tokens",
                   "operation_not_supported")


# ---- plumbing -----------------------------------------------------------------------------
def _wrap(scope: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        tenant, runner = request.app[_TENANT_KEY], request.app[_RUNNER_KEY]
        grant: Grant = request["grant"]
        require_scope(grant, scope)
        body = None
        if request.method in ("POST", "PATCH", "PUT", "DELETE") and request.body_exists:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "Invalid request payload JSON format") from None
        return await handler(Call(tenant, request, body, runner))
    return endpoint


@web.middleware
async def _management_api(request: web.Request, handler: Any) -> web.StreamResponse:
    tenant = request.app[_TENANT_KEY]
    if request.path.startswith("/__sandbox/"):
        return await handler(request)
    # Received but not answered yet (shown in state()): a request stays in flight (and takes
    # effect) even when its client has stopped waiting, as on Auth0.
    entry = f"{request.method} {request.path}"
    tenant.in_flight.append(entry)
    try:
        return await _answer(request, handler, tenant)
    finally:
        tenant.in_flight.remove(entry)


async def _answer(request: web.Request, handler: Any, tenant: Tenant) -> web.StreamResponse:
    if request.body_exists:
        await request.read()  # received in full before the latency: it takes effect even if the client goes
    if tenant.latency_ms:
        await asyncio.sleep(tenant.latency_ms / 1000)
    if request.path == "/oauth/token":
        return await _token(request, tenant)
    client_id: str | None = None
    headers: dict[str, str] = {}
    try:
        if not request.path.startswith(API_PREFIX + "/"):
            raise ApiError(404, "Not Found")
        decision = tenant.bucket.take()
        headers = decision.headers()
        if not decision.allowed:
            raise RATE_LIMITED
        fault = tenant.take_fault(request.method, request.path)
        if fault is not None:
            raise ApiError(fault.status, "Injected fault (otp-sandbox)", fault.error_code)
        grant = tenant.tokens.verify(request.headers.get("Authorization"))
        client_id = grant.client_id
        request["grant"] = grant
        response = await handler(request)
    except ApiError as err:
        response = _error(err)
    except web.HTTPNotFound:
        response = _error(ApiError(404, "Not Found"))
    except web.HTTPMethodNotAllowed:
        response = _error(ApiError(405, "Method Not Allowed"))
    except Exception:  # an emulator bug must still look like an Auth0 500, and be visible
        _log.exception("unhandled error on %s %s", request.method, request.path)
        response = _error(ApiError(500, "Internal Server Error"))
    response.headers.update(headers)
    tenant.requests.append(LoggedRequest(request.method, request.path, response.status,
                                         client_id, request.query_string))
    return response


async def _token(request: web.Request, tenant: Tenant) -> web.Response:
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            form = json.loads(raw or b"{}")
        except ValueError:
            form = None
    else:
        form = dict(parse_qsl(raw.decode(errors="replace")))
    client_id = str(form.get("client_id")) if isinstance(form, dict) and form.get(
        "client_id") else None
    try:
        if request.method != "POST":
            raise OAuthError(404, "not_found", "Not Found")
        if not isinstance(form, dict):
            raise OAuthError(400, "invalid_request", "Invalid request body")
        response = _json(tenant.tokens.issue(form))
    except OAuthError as err:
        response = _json(err.body(), err.status)
    tenant.requests.append(LoggedRequest(request.method, request.path, response.status,
                                         client_id))
    return response


async def fire(tenant: Tenant, runner: NodeRunner, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object")
    trigger = body.get("trigger")
    if trigger is not None and trigger not in PHONE_TRIGGERS:
        raise ApiError(400, f"trigger must be one of {', '.join(PHONE_TRIGGERS)} or null")
    message = PhoneMessage.from_dict(body)
    timeout = float(body.get("timeout_seconds") or tenant.runner_timeout_seconds)
    retries = int(body.get("retries") or 0)
    if not 0 <= retries <= MAX_RETRIES:
        raise ApiError(400, f"retries must be 0..{MAX_RETRIES}")
    result = await _run(tenant, runner, message, timeout, retries, trigger)
    logged = tenant.log_phone_message(message, result.outcome, result.reason)
    if logged is not None:
        result = dataclasses.replace(result, transaction_id=logged.transaction_id)
    return result.to_dict()


async def _run(tenant: Tenant, runner: NodeRunner, message: PhoneMessage, timeout: float,
               retries: int, trigger: str | None = None) -> PhoneMessageResult:
    """Run what the tenant runs for ``message`` (its route) in the Node runner."""
    route = tenant.route(message)
    # ``trigger`` names the path the caller expects; a tenant routing elsewhere runs nothing.
    if trigger and not any(run.kind == "hook" if trigger == "hook"
                           else run.kind == "action" and run.trigger == trigger
                           for run in route.runs):
        why = f"the tenant routes to {route.reason}" if route.runs else route.reason
        return PhoneMessageResult("no-handler", f"{trigger} does not run: {why}", 0.0, attempts=0)
    return await runner.run_all(tenant.name, route, message, timeout, retries)


async def _sandbox_phone_message(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(ApiError(400, "Invalid request payload JSON format"))
    try:
        return _json(await fire(request.app[_TENANT_KEY], request.app[_RUNNER_KEY], body))
    except ApiError as err:
        return _error(err)


def tenant_app(tenant: Tenant, runner: NodeRunner) -> web.Application:
    app = web.Application(middlewares=[_management_api], client_max_size=256 * 1024)
    app[_TENANT_KEY] = tenant
    app[_RUNNER_KEY] = runner
    for method, path, scope, handler in _ROUTES:
        app.router.add_route(method, path, _wrap(scope, handler))
    app.router.add_post("/__sandbox/phone-message", _sandbox_phone_message)
    return app
