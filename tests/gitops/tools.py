"""The GitOps tools' own health judges as commands, each a small Go program built through the Go
module proxy into the control plane's binary cache (built once, rebuilt when its sources change;
`make gitops-tools` builds them before the tests, like helm):

- ``kstatus/``: sigs.k8s.io/cli-utils' kstatus, how Flux and kpt judge an object's health;
- ``argocd/``: gopher-lua running a health script the way Argo CD runs one from argocd-cm.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from otp_sandbox.controlplane import build_go_binary
from otp_sandbox.controlplane.gomodules import required_version

HERE = Path(__file__).resolve().parent
# The chart's Argo CD health script, as the README's argocd-cm snippet shows it.
CHANNEL_HEALTH_LUA = HERE.parents[1] / "charts" / "otp-relay-operator" / "files" / "argocd" / "otpchannel-health.lua"
KSTATUS = ("kstatus", HERE / "kstatus", "sigs.k8s.io/cli-utils")
ARGOCD_HEALTH = ("argocd-health", HERE / "argocd", "github.com/yuin/gopher-lua")


def locate(tool: tuple[str, Path, str]) -> Path:
    stem, directory, module = tool
    version = required_version(directory / "go.mod", module)
    sources = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.iterdir()))).hexdigest()[:12]
    return build_go_binary(f"{stem}-{version}-{sources}", directory, ".")


def _judge(argv: list[str], obj: dict[str, Any]) -> tuple[str, str]:
    result = subprocess.run(argv, input=json.dumps(obj), capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")
    state, _, message = result.stdout.partition("\n")
    return state, message.strip()


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """kstatus' (status, message) of one object as the API server returned it."""
    return _judge([str(locate(KSTATUS))], obj)


def argocd_health(obj: dict[str, Any], script: Path = CHANNEL_HEALTH_LUA) -> tuple[str, str]:
    """Argo CD's (health status, message) of one object from a health script."""
    return _judge([str(locate(ARGOCD_HEALTH)), str(script)], obj)


if __name__ == "__main__":  # `python -m tests.gitops.tools`: build (or find) them before the tests run
    for tool in (KSTATUS, ARGOCD_HEALTH):
        print(f"{tool[0]}: {locate(tool)}")
