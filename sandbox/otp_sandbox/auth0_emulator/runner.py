"""Runs registered Action/Hook code in a fresh Node.js process (``runner.js``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .events import PhoneMessage, action_event, hook_args
from .tenant import Execution, Route

RUNNER_JS = Path(__file__).with_name("runner.js")
_MARK = b"@@otp-sandbox-result "
# Grace on top of the in-process time limit before the Node process is killed from outside.
_KILL_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class PhoneMessageResult:
    outcome: str  # success | retry | drop | error | no-handler
    reason: str | None
    duration_ms: float
    ran: list[str] = field(default_factory=list)  # names of the actions/hooks executed
    logs: list[str] = field(default_factory=list)
    attempts: int = 1  # runs of the chain (Auth0 runs it again after api.notification.retry)
    # The tenant log's transaction for this message (None: nothing logged); use_code takes it.
    transaction_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NodeRunner:
    def __init__(self, ca_cert: Path | None, node: str | None = None) -> None:
        self._node = node or shutil.which("node") or "node"
        self._env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                     "HOME": os.environ.get("HOME", "/tmp"),
                     "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
        if ca_cert is not None:
            self._env["NODE_EXTRA_CA_CERTS"] = str(ca_cert)

    async def check_syntax(self, code: str) -> str | None:
        """The syntax error ``node --check`` reports for ``code`` (what a build would), or None."""
        with tempfile.TemporaryDirectory(prefix="otp-sandbox-build-") as tmp:
            path = Path(tmp) / "action.js"
            path.write_text(code)
            proc = await asyncio.create_subprocess_exec(
                self._node, "--check", str(path), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, env=self._env)
            _, stderr = await proc.communicate()
        if proc.returncode == 0:
            return None
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if "Error" in ln]
        return (lines[0] if lines else "syntax error").strip()[:500]

    async def run_all(self, tenant_name: str, route: Route, message: PhoneMessage,
                      timeout_seconds: float, retries: int = 0) -> PhoneMessageResult:
        """Run the route in order; the first non-success outcome ends it (as Auth0 would).
        After ``retry`` the whole chain runs again with the same message, ``retries`` times."""
        started = time.monotonic()
        if not route.runs:
            return PhoneMessageResult("no-handler", route.reason, 0.0, attempts=0)
        ran: list[str] = []
        logs: list[str] = []
        outcome, reason = "retry", None
        attempts = 0
        while outcome == "retry" and attempts <= retries:
            attempts += 1
            for execution in route.runs:
                outcome, reason, more_logs = await self._run_one(tenant_name, execution,
                                                                 message, timeout_seconds)
                ran.append(execution.name)
                logs.extend(more_logs)
                if outcome != "success":
                    break
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        return PhoneMessageResult(outcome, reason, duration_ms, ran, logs, attempts)

    async def _run_one(self, tenant_name: str, execution: Execution, message: PhoneMessage,
                       timeout_seconds: float) -> tuple[str, str | None, list[str]]:
        job: dict[str, Any] = {"kind": execution.kind, "trigger": execution.trigger,
                               "code": execution.code,
                               "timeout_ms": int(timeout_seconds * 1000)}
        if execution.kind == "hook":
            job["hook_args"] = hook_args(tenant_name, message, execution.secrets)
        else:
            job["event"] = action_event(execution.trigger, tenant_name, message,
                                        execution.secrets)
        proc = await asyncio.create_subprocess_exec(
            self._node, str(RUNNER_JS), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self._env)
        try:
            stdout, stderr = await asyncio.wait_for(
                proc.communicate(json.dumps(job).encode()),
                timeout_seconds + _KILL_GRACE_SECONDS)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return "error", f"killed after {timeout_seconds:.1f} s without finishing", []
        for line in reversed(stdout.splitlines()):
            if line.startswith(_MARK):
                result = json.loads(line[len(_MARK):])
                return result["outcome"], result.get("reason"), list(result.get("logs", []))
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return "error", f"node runner failed (exit {proc.returncode}): {tail[0]}", []
