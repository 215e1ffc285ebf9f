"""The helm command for the chart tests: from PATH when present, else built from the Go module
pinned in ``helm-tool/go.mod`` into the control plane's binary cache (built once, then reused)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from otp_sandbox.controlplane import binary_dir, build_go_binary
from otp_sandbox.controlplane.gomodules import required_version

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "otp-relay-operator"
HELM_TOOL_DIR = Path(__file__).resolve().parent / "helm-tool"
HELM_MODULE = "helm.sh/helm/v3"


def pinned_helm_version() -> str:
    return required_version(HELM_TOOL_DIR / "go.mod", HELM_MODULE)


def helm_ready() -> bool:
    """Whether helm is there without building it (on PATH or already in the cache)."""
    return shutil.which("helm") is not None or (binary_dir() / f"helm-{pinned_helm_version()}").is_file()


def locate_helm() -> Path:
    """``helm`` from PATH, or the pinned version from the cache (building it when missing)."""
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    version = pinned_helm_version()
    return build_go_binary(
        f"helm-{version}",
        HELM_TOOL_DIR,
        f"{HELM_MODULE}/cmd/helm",
        ldflags=(f"-X {HELM_MODULE}/internal/version.version={version}",),
    )


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its output."""

    def __init__(self, args: Sequence[str], output: str) -> None:
        super().__init__(f"helm {' '.join(args)} failed:\n{output}")
        self.output = output


@dataclass(frozen=True)
class Helm:
    """Runs helm with its config/cache/data in ``home`` (never the user's own) and, for commands
    that talk to a cluster, ``kubeconfig``."""

    binary: Path
    home: Path
    kubeconfig: str | None = None

    def with_kubeconfig(self, kubeconfig: str) -> Helm:
        return Helm(self.binary, self.home, kubeconfig)

    def run(self, *args: str, timeout: float = 300) -> str:
        env = {
            **os.environ,
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        env.pop("KUBECONFIG", None)
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        result = subprocess.run(
            [str(self.binary), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise HelmError(args, result.stdout + result.stderr)
        return result.stdout

    def uninstall(self, release: str, namespace: str) -> None:
        """Remove a release if it exists (cleanup after a test, also after a failed install)."""
        try:
            self.run("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
        except HelmError as error:
            if "not found" not in error.output:
                raise

    def template(self, *args: str, release: str = "otp", namespace: str = "otp-system") -> list[dict]:
        """Rendered objects (CRDs included) of the chart with extra ``args`` (e.g. --set ...)."""
        output = self.run("template", release, str(CHART_DIR), "--namespace", namespace, "--include-crds", *args)
        return [doc for doc in yaml.safe_load_all(output) if doc]


def set_values(values: dict[str, object]) -> list[str]:
    """``--set-json key=<json>`` arguments for ``values`` (exact types, lists included)."""
    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


if __name__ == "__main__":  # `python -m tests.chart.helm`: build (or find) helm before the tests run
    print(f"helm: {locate_helm()}")
