"""The detached process behind ``otp-sandbox cluster up``: it owns the control plane's
components (they die with it, see process.py) and records its state in a JSON file.

State file ``$OTP_SANDBOX_RUN/cluster.json`` (default ``$OTP_SANDBOX_CACHE/run/cluster.json``):
``{"status": "starting" | "ready" | "failed" | "degraded", "pid": ..., "profile": ...,
"kubeconfig": ..., "server": ..., "run_dir": ..., "components": {name: pid}, "error": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .builder import cache_root
from .cluster import PROFILES, ControlPlane, ControlPlaneError
from .node import NodeImages

MODULE = "otp_sandbox.controlplane.supervisor"


def state_dir() -> Path:
    return Path(os.environ.get("OTP_SANDBOX_RUN") or cache_root() / "run")


def state_file() -> Path:
    return state_dir() / "cluster.json"


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(state: dict[str, Any]) -> None:
    path = state_file()
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_text(json.dumps(state, indent=2))
    os.replace(staged, path)


def is_supervisor(pid: int) -> bool:
    """True when ``pid`` is alive (not a zombie) and runs this module (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return MODULE.encode() in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def run(profile: str, timeout: float, real_node: NodeImages | None = None) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    run_dir = state_dir() / f"cluster-{os.getpid()}"
    plane = ControlPlane(profile=profile, startup_timeout=timeout, run_dir=run_dir,  # type: ignore[arg-type]
                         real_node=real_node)
    state: dict[str, Any] = {"status": "starting", "pid": os.getpid(), "profile": profile, "run_dir": str(run_dir)}
    write_state(state)
    try:
        plane.start()
    except (ControlPlaneError, RuntimeError, OSError) as error:
        write_state({**state, "status": "failed", "error": str(error)})
        print(f"control plane failed to start: {error}", file=sys.stderr)
        _remove_tree(run_dir)
        return 1
    state = {**state, **plane.describe(), "status": "ready"}
    write_state(state)
    try:
        while not stop.wait(1.0):
            dead = [c.name for c in plane.components if c.exited() is not None]
            if dead and state["status"] != "degraded":
                state = {**state, "status": "degraded", "error": f"exited: {', '.join(dead)}"}
                write_state(state)
    finally:
        plane.stop()
        _remove_tree(run_dir)
        state_file().unlink(missing_ok=True)
    return 0


def _remove_tree(path: Path) -> None:
    import shutil  # noqa: PLC0415

    shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE)
    parser.add_argument("--profile", choices=PROFILES, default="minimal")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--node-pause", help="run a real kubelet Node with this pod sandbox image")
    parser.add_argument("--node-archive", action="append", default=[], type=Path, help="image tarball for it")
    args = parser.parse_args(argv)
    node = NodeImages(args.node_pause, tuple(args.node_archive)) if args.node_pause else None
    return run(args.profile, args.timeout, node)


if __name__ == "__main__":
    sys.exit(main())
