"""kstatus (sigs.k8s.io/cli-utils, how Flux and kpt judge health) as a command: the small Go
program in ``kstatus/`` built through the Go module proxy into the control plane's binary cache
(built once, then reused), like tests/chart/helm.py builds helm."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from otp_sandbox.controlplane import build_go_binary
from otp_sandbox.controlplane.gomodules import required_version

KSTATUS_DIR = Path(__file__).resolve().parent / "kstatus"
CLI_UTILS_MODULE = "sigs.k8s.io/cli-utils"


def locate_kstatus() -> Path:
    version = required_version(KSTATUS_DIR / "go.mod", CLI_UTILS_MODULE)
    sources = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(KSTATUS_DIR.iterdir()))).hexdigest()[:12]
    return build_go_binary(f"kstatus-{version}-{sources}", KSTATUS_DIR, ".")  # rebuilt when main.go changes


def compute(binary: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """kstatus' (status, message) of one object as the API server returned it."""
    result = subprocess.run([str(binary)], input=json.dumps(obj), capture_output=True, text=True, timeout=30,
                            check=True)
    state, _, message = result.stdout.partition("\n")
    return state, message.strip()


if __name__ == "__main__":  # `python -m tests.gitops.kstatus`: build (or find) it before the tests run
    print(f"kstatus: {locate_kstatus()}")
