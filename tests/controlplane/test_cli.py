"""``otp-sandbox cluster up/down`` runs the control plane in the background and cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def otp_sandbox(run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTP_SANDBOX_RUN": str(run_dir)}
    return subprocess.run(
        [sys.executable, "-m", "otp_sandbox.cli", *args], env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.mark.kubelet
def test_up_status_down_leaves_no_process_behind(tmp_path):
    up = otp_sandbox(tmp_path, "cluster", "up", "--full")
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip().splitlines()[-1].removeprefix("KUBECONFIG="))
    assert kubeconfig.is_file()
    state = json.loads((tmp_path / "cluster.json").read_text())
    node = state["real_node"]
    pids = [state["pid"], *state["components"].values(), *node["components"].values()]
    assert set(state["components"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    assert set(node["components"]) == {"containerd", "kubelet"} and node["started_seconds"] > 0
    assert all(alive(p) for p in pids)

    status = otp_sandbox(tmp_path, "cluster", "status")
    assert status.returncode == 0 and "status: ready" in status.stdout
    assert f"KUBECONFIG={kubeconfig}" in status.stdout

    down = otp_sandbox(tmp_path, "cluster", "down")
    assert down.returncode == 0, down.stderr
    assert wait_gone(pids) == []
    assert not (tmp_path / "cluster.json").exists()
    assert not kubeconfig.exists() and not Path(state["run_dir"]).exists()
    assert not Path(node["directory"]).exists() and not Path("/sys/class/net", node["bridge"]).exists()
    assert otp_sandbox(tmp_path, "cluster", "status").returncode == 3


def test_components_die_with_a_killed_supervisor(tmp_path):
    up = otp_sandbox(tmp_path, "cluster", "up")
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / "cluster.json").read_text())
    components = list(state["components"].values())
    assert len(components) == 2

    os.kill(state["pid"], signal.SIGKILL)  # no cleanup code runs in the supervisor
    assert wait_gone([state["pid"], *components]) == []

    status = otp_sandbox(tmp_path, "cluster", "status")  # notices the stale state and tidies it
    assert status.returncode == 3 and "no cluster running" in status.stdout
    assert not (tmp_path / "cluster.json").exists() and not Path(state["run_dir"]).exists()
