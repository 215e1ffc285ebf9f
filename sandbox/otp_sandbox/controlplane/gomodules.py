"""What the control plane is built from: the Go modules under ``sandbox/controlplane/``.

The pinned versions live only in those ``go.mod`` files; this module reads them and describes
how each binary is built. Everything here is pure (files are only read).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

MODULES_ROOT = Path(__file__).resolve().parents[2] / "controlplane"

KUBERNETES_MODULE = "k8s.io/kubernetes"
KWOK_MODULE = "sigs.k8s.io/kwok"
KWOK_STAGES_FILE = "kwok-stages-v2.yaml"  # v2: pod readiness can be delayed per pod
# A pod annotated with a duration (e.g. "3s") is marked Ready by kwok that long after it starts,
# as a real node's pod would be after pulling, starting and passing its probes; benchmarks use it.
# Pods without it are Ready at once.
KWOK_POD_READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"
# Upstream's default "fast" stages (node init + heartbeat, pod ready/complete/delete), shipped
# inside the pinned kwok module; the kwok binary refuses to start without stages.
KWOK_STAGE_SOURCES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


@dataclass(frozen=True)
class BinarySpec:
    """One binary: built by ``go build <package>`` inside ``modules_root/<module>``."""

    name: str
    module: str
    package: str
    ldflags: tuple[str, ...] = ()


def required_version(go_mod: Path, module_path: str) -> str:
    """The version of ``module_path`` that ``go_mod`` requires."""
    text = go_mod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module_path)}\s+(v\S+)", text, re.M)
    if match is None:
        raise ValueError(f"{go_mod} does not require {module_path}")
    return match.group(1)


def kubernetes_version(root: Path = MODULES_ROOT) -> str:
    return required_version(root / "kubernetes" / "go.mod", KUBERNETES_MODULE)


def kubernetes_version_ldflags(version: str) -> tuple[str, ...]:
    """``-X`` flags that make ``--version`` report ``version`` like an upstream release build."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+.*", version)
    if match is None:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    major, minor = match.groups()
    values = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return tuple(
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in values.items()
    )


def control_plane_binaries(root: Path = MODULES_ROOT) -> tuple[BinarySpec, ...]:
    """All binaries in build order (the API server first: it is needed by every profile)."""
    version_flags = kubernetes_version_ldflags(kubernetes_version(root))
    kube = tuple(
        BinarySpec(name, "kubernetes", f"{KUBERNETES_MODULE}/cmd/{name}", version_flags)
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    )
    return (
        kube[0],
        BinarySpec("etcd", "etcd", "./cmd/etcd"),
        *kube[1:],
        BinarySpec("kwok", "kwok", f"{KWOK_MODULE}/cmd/kwok"),
        BinarySpec("kubelet", "kubernetes", f"{KUBERNETES_MODULE}/cmd/kubelet", version_flags),
    )


def source_digest(root: Path = MODULES_ROOT) -> str:
    """A short hash of every file that decides what gets built (go.mod, go.sum, wrappers)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".mod", ".sum", ".go"}):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
