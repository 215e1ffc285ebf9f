"""Runs registered Action/Hook code in a fresh Node.js process (``runner.js``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .events import PhoneMessage, action_event, hook_args
from .tenant import Execution

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

    async def run_all(self, tenant_name: str, plan: list[Execution], message: PhoneMessage,
                      timeout_seconds: float) -> PhoneMessageResult:
        """Run the plan in order; the first non-success outcome ends it (as Auth0 would)."""
        started = time.monotonic()
        if not plan:
            return PhoneMessageResult(
                "no-handler", "no hook or deployed action handles phone messages", 0.0)
        ran: list[str] = []
        logs: list[str] = []
        outcome, reason = "success", None
        for execution in plan:
            outcome, reason, more_logs = await self._run_one(tenant_name, execution, message,
                                                             timeout_seconds)
            ran.append(execution.name)
            logs.extend(more_logs)
            if outcome != "success":
                break
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        return PhoneMessageResult(outcome, reason, duration_ms, ran, logs)

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
