"""Start the emulator as a subprocess and drive it from Python (tests, the demo, benchmarks)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import httpx

from ..lifetime import die_with_this_process
from ..pki import CertificateAuthority
from .config import Client, RateLimit
from .runner import PhoneMessageResult
from .tenant import LoggedRequest

_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Tenant phone routing that sends MFA SMS to each integration's code (as set in the Dashboard).
ROUTING_FOR_MODE: dict[str, dict[str, Any]] = {
    "phone-provider": {"phone_consolidated_experience": True, "sms_factor": True,
                       "message_types": ["sms"]},
    # Only a tenant with the legacy flag (old, or set by Auth0 Support) can select the hook.
    "send-phone-message": {"phone_consolidated_experience": False, "sms_factor": True,
                           "message_types": ["sms"], "selected_provider": "phone-message-hook",
                           "legacy_mfa_phone_provider": True},
    "legacy-hook": {"phone_consolidated_experience": False, "sms_factor": True,
                    "message_types": ["sms"], "selected_provider": "phone-message-hook",
                    "legacy_mfa_phone_provider": True},
}
_FIRE_GRACE_SECONDS = 15.0


def _phone_message_body(recipient: str, text: str, code: str | None, message_type: str,
                        trigger: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    return {"recipient": recipient, "text": text, "code": code, "message_type": message_type,
            "trigger": trigger, **extra}


class Auth0Tenant:
    """A handle on one emulated tenant; ``domain`` is what goes in ``spec.auth0.domain``."""

    def __init__(self, emulator: Auth0Emulator, name: str, port: int,
                 clients: tuple[Client, ...]) -> None:
        self._emulator = emulator
        self.name = name
        self.port = port
        self.domain = f"localhost:{port}"
        self.base_url = f"https://{self.domain}"
        self.clients = clients

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the tenant's certificate (the sandbox CA): pass it as httpx's ``verify=``."""
        return self._emulator.ssl_context

    def _path(self, suffix: str) -> str:
        return f"/tenants/{self.name}/{suffix}"

    # ---- observation ---------------------------------------------------------------------
    def requests(self) -> list[LoggedRequest]:
        data = self._emulator._call("GET", self._path("requests")).json()
        return [LoggedRequest(**item) for item in data]

    def clear_requests(self) -> None:
        self._emulator._call("DELETE", self._path("requests"))

    def writes(self) -> list[LoggedRequest]:
        """Requests that could change the tenant (token requests excluded)."""
        return [r for r in self.requests()
                if r.method in _WRITE_METHODS and r.path != "/oauth/token"]

    def state(self) -> dict[str, Any]:
        return self._emulator._call("GET", self._path("state")).json()

    # ---- phone messages ------------------------------------------------------------------
    def fire_phone_message(self, recipient: str = "+6591234567",
                           text: str = "Your code is 123456", code: str | None = "123456",
                           message_type: str = "otp_verify", trigger: str | None = None,
                           **extra: Any) -> PhoneMessageResult:
        """Run what Auth0 would run for this phone message (``trigger``: None picks like a
        tenant would; or "custom-phone-provider" | "send-phone-message" | "hook")."""
        body = _phone_message_body(recipient, text, code, message_type, trigger, extra)
        response = self._emulator._call("POST", self._path("phone-message"), json=body,
                                        timeout=self._emulator.fire_timeout)
        return PhoneMessageResult(**response.json())

    async def fire_phone_message_async(self, recipient: str = "+6591234567",
                                       text: str = "Your code is 123456",
                                       code: str | None = "123456",
                                       message_type: str = "otp_verify",
                                       trigger: str | None = None,
                                       **extra: Any) -> PhoneMessageResult:
        body = _phone_message_body(recipient, text, code, message_type, trigger, extra)
        async with httpx.AsyncClient(base_url=self._emulator.admin_url,
                                     verify=self._emulator.ssl_context,
                                     timeout=self._emulator.fire_timeout) as client:
            response = await client.post(self._path("phone-message"), json=body)
        _raise_for_status(response)
        return PhoneMessageResult(**response.json())

    # ---- tenant log and log streams ------------------------------------------------------
    def logs(self) -> list[dict[str, Any]]:
        """The tenant log (Auth0's log event format, oldest first): what fired phone messages
        and ``use_code`` wrote (``gd_send_sms``, ``cs``, ``gd_auth_failed``, ``s``...)."""
        return self._emulator._call("GET", self._path("logs")).json()

    def use_code(self, recipient_or_message: str | PhoneMessageResult | None = None, ok: bool = True, *,
                 connection: str | None = None) -> dict[str, Any]:
        """The user enters the code of a logged phone message, rightly (``ok``) or not: the one
        a ``fire_phone_message`` result names (its ``transaction_id``), or the latest logged to
        the recipient (a phone number; None: to anyone) for ``connection`` (None: MFA). Answers
        the event logged (MFA ``gd_auth_succeed``/``gd_auth_failed``, passwordless ``s``/``f``).
        Raises when no such message was logged, or for ``ok`` when it never went out or its code
        was already used."""
        body: dict[str, Any] = {"connection": connection, "ok": ok}
        if isinstance(recipient_or_message, PhoneMessageResult):
            if recipient_or_message.transaction_id is None:
                raise ValueError("that phone message was not logged (nothing of ours ran)")
            body["transaction_id"] = recipient_or_message.transaction_id
        else:
            body["recipient"] = recipient_or_message
        return self._emulator._call("POST", self._path("use-code"), json=body).json()

    def log_stream_deliveries(self) -> dict[str, Any]:
        """``streams``: each log stream with ``pending``, ``delivered``, ``errors`` (its health,
        last ten) and ``failing_since``; ``attempts``: every POST to a sink (``stream``,
        ``attempt`` 1-3 within a round, ``result``: HTTP status, "timeout", "connection error"
        or "not allowed", ``log_ids``, ``nominal`` seconds on the delivery clock);
        ``time_factor``."""
        return self._emulator._call("GET", self._path("log-streams")).json()

    def set_log_stream_time_factor(self, factor: float) -> None:
        """Scale every log stream delay (batching, retries, backoff, the 7-day suspension) by
        ``factor`` (0 < factor <= 1; 1 is real time)."""
        self._settings(log_stream_time_factor=factor)

    def set_log_stream_limit(self, count: int) -> None:
        """The tenant's plan allows ``count`` log streams (default 2; prioritized ones do not
        count)."""
        self._settings(log_stream_limit=count)

    # ---- faults and knobs ----------------------------------------------------------------
    def _settings(self, **settings: Any) -> None:
        self._emulator._call("POST", self._path("settings"), json=settings)

    def set_latency(self, ms: int) -> None:
        self._settings(latency_ms=ms)

    def set_rate_limit(self, limit: RateLimit | None = None, *, capacity: int | None = None,
                       refill_per_second: float | None = None) -> None:
        if limit is None:
            limit = RateLimit(capacity or RateLimit().capacity,
                              refill_per_second or RateLimit().refill_per_second)
        self._settings(rate_limit={"capacity": limit.capacity,
                                   "refill_per_second": limit.refill_per_second})

    def fail_next(self, status: int, count: int = 1, *, method: str | None = None,
                  path_suffix: str | None = None, error_code: str | None = None) -> None:
        """The next ``count`` Management API requests (those matching ``method`` and ending in
        ``path_suffix``, when given) answer ``status`` with an Auth0 error body."""
        self._settings(fail_next={"status": status, "count": count, "method": method,
                                  "path_suffix": path_suffix, "error_code": error_code})

    def set_phone(self, **phone: Any) -> None:
        """Set the tenant's phone routing as a person would in the Dashboard:
        phone_consolidated_experience (None: absent from the settings), sms_factor,
        message_types, selected_provider, mfa_policies; and what only Auth0 sets: legacy_mfa_phone_provider,
        legacy_passwordless_phone_provider."""
        self._settings(phone=phone)

    def set_sms_connections(self, *connections: dict[str, Any]) -> None:
        """The tenant's passwordless `sms` connections, as created in the Dashboard:
        {"name": ..., "options": {...}} each (replacing those it had)."""
        self._settings(connections=list(connections))

    def route_phone_messages_to(self, mode: str) -> None:
        """Route MFA SMS to integration ``mode``'s code, as a person would set the tenant up."""
        self.set_phone(**ROUTING_FOR_MODE[mode])

    def set_deploy_seconds(self, seconds: float) -> None:
        self._settings(deploy_seconds=seconds)

    def fail_builds(self, message: str | None) -> None:
        """Every build from now on fails with ``message`` (None: builds succeed again)."""
        self._settings(build_failure=message)

    def retry_builds(self, count: int) -> None:
        """The next ``count`` builds fail once inside Auth0 and are retried: they report
        ``retrying`` and take twice as long, then end ``built`` (or ``failed``)."""
        self._settings(build_retries=count)

    def revoke_tokens(self) -> None:
        """Every token issued so far becomes invalid (401 on use), as after a key rotation."""
        self._settings(revoke_tokens=True)

    def set_build_seconds(self, seconds: float) -> None:
        self._settings(build_seconds=seconds)

    def set_runner_timeout(self, seconds: float) -> None:
        self._settings(runner_timeout_seconds=seconds)

    def remove(self) -> None:
        self._emulator._call("DELETE", f"/tenants/{self.name}")


class Auth0Emulator:
    def __init__(self, process: subprocess.Popen, admin_url: str, ca: CertificateAuthority,
                 log_path: Path) -> None:
        self.process = process
        self.admin_url = admin_url
        self.ca = ca
        self.log_path = log_path
        self.fire_timeout = 10.0 + _FIRE_GRACE_SECONDS
        self.ssl_context = ssl.create_default_context(cafile=str(ca.cert_path))
        self._http = httpx.Client(base_url=admin_url, verify=self.ssl_context, timeout=30.0)
        self._counter = 0

    @classmethod
    def start(cls, ca: CertificateAuthority, workdir: Path,
              startup_timeout: float = 30.0) -> Auth0Emulator:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ready_path = workdir / "ready.json"
        ready_path.unlink(missing_ok=True)
        log_path = workdir / "auth0-emulator.log"
        command = [sys.executable, "-m", "otp_sandbox.cli", "auth0-emulator",
                   "--state-dir", str(workdir), "--ca-dir", str(ca.directory)]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=os.environ.copy(),
                                       preexec_fn=die_with_this_process())
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if ready_path.exists():
                try:
                    ready = json.loads(ready_path.read_text())
                except ValueError:
                    ready = None  # being written
                if ready and ready.get("pid") == process.pid:
                    return cls(process, ready["admin_url"], ca, log_path)
            if process.poll() is not None:
                raise RuntimeError(f"auth0 emulator exited with {process.returncode}: "
                                   f"{_tail(log_path)}")
            time.sleep(0.05)
        process.kill()
        process.wait()
        raise RuntimeError(f"auth0 emulator not ready after {startup_timeout} s: "
                           f"{_tail(log_path)}")

    def add_tenant(self, clients: Iterable[Client], latency_ms: int = 0,
                   rate_limit: RateLimit = RateLimit(), build_seconds: float = 0.3,
                   token_lifetime_seconds: int = 86400, runner_timeout_seconds: float = 10.0,
                   name: str | None = None, deploy_seconds: float = 0.5,
                   phone_consolidated_experience: bool | None = True,
                   legacy_mfa_phone_provider: bool = False,
                   legacy_passwordless_phone_provider: bool = False) -> Auth0Tenant:
        clients = tuple(clients)
        if name is None:
            self._counter += 1
            name = f"tenant{self._counter}"
        body = {
            "name": name,
            "clients": [c.to_dict() for c in clients],
            "latency_ms": latency_ms,
            "rate_limit": {"capacity": rate_limit.capacity,
                           "refill_per_second": rate_limit.refill_per_second},
            "build_seconds": build_seconds,
            "token_lifetime_seconds": token_lifetime_seconds,
            "runner_timeout_seconds": runner_timeout_seconds,
            "deploy_seconds": deploy_seconds,
            "phone_consolidated_experience": phone_consolidated_experience,
            "legacy_mfa_phone_provider": legacy_mfa_phone_provider,
            "legacy_passwordless_phone_provider": legacy_passwordless_phone_provider,
        }
        self.fire_timeout = max(self.fire_timeout, runner_timeout_seconds + _FIRE_GRACE_SECONDS)
        data = self._call("POST", "/tenants", json=body).json()
        return Auth0Tenant(self, data["name"], data["port"], clients)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        _raise_for_status(response)
        return response

    def stop(self, timeout: float = 10.0) -> None:
        self._http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Auth0Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise RuntimeError(f"auth0 emulator admin API: {response.status_code} {response.text}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
