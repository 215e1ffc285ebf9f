"""``otp-sandbox build`` and ``otp-sandbox cluster up|down|status``."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from . import supervisor
from .builder import BuildError, build, printer
from .process import log_tail

_UP_MARGIN = 30.0
_DOWN_TIMEOUT = 60.0


def register(subparsers: Any) -> None:
    build_parser = subparsers.add_parser("build", help="build the local control plane binaries from source")
    build_parser.set_defaults(func=_build)

    cluster = subparsers.add_parser("cluster", help="run a local Kubernetes control plane in the background")
    actions = cluster.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start it and print KUBECONFIG=<path>")
    up.add_argument("--full", action="store_true",
                    help="also run controller-manager, scheduler, kwok with a fake Node and a real kubelet Node "
                         "running the project's image (built with podman)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds each component may take to get ready")
    up.set_defaults(func=_up)
    actions.add_parser("down", help="stop it and remove its files").set_defaults(func=_down)
    actions.add_parser("status", help="show whether it runs").set_defaults(func=_status)


def _build(args: argparse.Namespace) -> int:
    try:
        build()
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _up(args: argparse.Namespace) -> int:
    profile = "full" if args.full else "minimal"
    state = _live_state()
    if state is not None:
        if state.get("profile") != profile:
            print(f"error: a {state.get('profile')} cluster is already running (pid {state['pid']}); "
                  "run `otp-sandbox cluster down` first", file=sys.stderr)
            return 1
        print(f"KUBECONFIG={state['kubeconfig']}")
        return 0
    try:
        build(report=printer(sys.stderr))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    node_args: list[str] = []
    if args.full:
        from .. import image  # noqa: PLC0415  (podman is needed for --full only)

        try:
            images = image.node_images(report=printer(sys.stderr))
        except image.ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        node_args = [f"--node-pause={images.pause}", *(f"--node-archive={a}" for a in images.archives)]
    directory = supervisor.state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    supervisor.state_file().unlink(missing_ok=True)
    log_path = directory / "supervisor.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", supervisor.MODULE, f"--profile={profile}", f"--timeout={args.timeout}", *node_args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + args.timeout * (3 if args.full else 2) + _UP_MARGIN
    while time.monotonic() < deadline:
        state = supervisor.read_state() or {}
        if state.get("status") == "ready":
            print(f"KUBECONFIG={state['kubeconfig']}")
            return 0
        if state.get("status") == "failed" or process.poll() is not None:
            process.wait(timeout=_DOWN_TIMEOUT)
            print(f"error: {state.get('error') or 'the cluster supervisor exited'}\n"
                  f"(supervisor log {log_path}):\n{log_tail(log_path)}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    process.terminate()
    print(f"error: the cluster did not become ready in time; supervisor log {log_path}:\n{log_tail(log_path)}",
          file=sys.stderr)
    return 1


def _down(args: argparse.Namespace) -> int:
    state = supervisor.read_state()
    if state is None:
        print("no cluster running")
        return 0
    pid = int(state["pid"])
    if supervisor.is_supervisor(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _DOWN_TIMEOUT
        while supervisor.is_supervisor(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if supervisor.is_supervisor(pid):  # components die with it (PR_SET_PDEATHSIG)
            os.kill(pid, signal.SIGKILL)
    supervisor.state_file().unlink(missing_ok=True)
    _remove_leftover(state.get("run_dir"))
    print("cluster stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _live_state()
    if state is None:
        print("no cluster running")
        return 3
    print(f"status: {state['status']}  profile: {state['profile']}  pid: {state['pid']}")
    if "server" in state:
        print(f"server: {state['server']}")
        print(f"KUBECONFIG={state['kubeconfig']}")
        for name, pid in state.get("components", {}).items():
            print(f"  {name}: pid {pid}")
    if state.get("error"):
        print(f"error: {state['error']}")
    return 0 if state["status"] == "ready" else 1


def _live_state() -> dict[str, Any] | None:
    """The state of a running supervisor; a stale file (supervisor gone) is cleaned up."""
    state = supervisor.read_state()
    if state is None:
        return None
    if supervisor.is_supervisor(int(state.get("pid", 0))):
        return state
    supervisor.state_file().unlink(missing_ok=True)
    _remove_leftover(state.get("run_dir"))
    return None


def _remove_leftover(run_dir: object) -> None:
    import shutil  # noqa: PLC0415

    if isinstance(run_dir, str) and run_dir.startswith(str(supervisor.state_dir())):
        shutil.rmtree(run_dir, ignore_errors=True)
