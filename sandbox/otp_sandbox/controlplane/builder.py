"""Build the control-plane binaries from source into a per-version cache (outside the repo).

``$OTP_SANDBOX_CACHE/bin/<kubernetes-version>-<source digest>/`` holds the binaries; each one is
built into a temporary directory next to it and renamed into place, so an interrupted build never
leaves a half-written binary behind, and a second build returns at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import yaml

from . import gomodules

KUBEBUILDER_ASSETS = "KUBEBUILDER_ASSETS"
ASSET_BINARIES = ("etcd", "kube-apiserver")
GO_INSTALL_HINT = (
    "Go toolchain not found: install Go >= 1.26 (https://go.dev/dl/) and put `go` on PATH "
    f"(or set {KUBEBUILDER_ASSETS} to a directory with prebuilt etcd and kube-apiserver)"
)

# Called with (text, finished): a line is printed in two parts so the binary's name shows while
# it builds and the duration follows on the same line.
GO_FALLBACKS = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")  # official tarball, Debian golang-go
Reporter = Callable[[str, bool], None]


def printer(stream: TextIO | None = None) -> Reporter:
    def report(text: str, finished: bool = True) -> None:
        print(text, end="\n" if finished else " ", file=stream or sys.stdout, flush=True)

    return report


class BuildError(RuntimeError):
    """A binary could not be built (the message says which and why)."""


def cache_root() -> Path:
    return Path(os.environ.get("OTP_SANDBOX_CACHE") or Path.home() / ".cache" / "otp-relay-operator")


def binary_dir() -> Path:
    """Where the control plane's binaries (and extra Go binaries such as helm) are cached."""
    root = gomodules.MODULES_ROOT
    return cache_root() / "bin" / f"{gomodules.kubernetes_version(root)}-{gomodules.source_digest(root)}"


def go_executable() -> Path:
    found = shutil.which("go") or next((p for p in GO_FALLBACKS if os.access(p, os.X_OK)), None)
    if found is None:
        raise BuildError(GO_INSTALL_HINT)
    return Path(found)


def asset_dir() -> Path | None:
    """``$KUBEBUILDER_ASSETS`` when it holds at least etcd and kube-apiserver."""
    value = os.environ.get(KUBEBUILDER_ASSETS)
    if not value:
        return None
    directory = Path(value)
    return directory if all(_executable(directory / name) for name in ASSET_BINARIES) else None


def locate(names: Sequence[str]) -> dict[str, Path]:
    """The path of each binary in ``names`` (KUBEBUILDER_ASSETS first, then the cache);
    raises naming every missing one."""
    search = [d for d in (asset_dir(), binary_dir()) if d is not None]
    found: dict[str, Path] = {}
    for name in names:
        path = next((d / name for d in search if _executable(d / name)), None)
        if path is not None:
            found[name] = path
    missing = [n for n in names if n not in found]
    if missing:
        raise BuildError(
            f"control plane binaries missing: {', '.join(missing)} "
            f"(looked in {', '.join(map(str, search))}); run `otp-sandbox build`"
        )
    return found


def build(report: Reporter | None = None) -> Path:
    """Build every control-plane binary that is not already available; returns the cache dir."""
    report = report or printer()
    target = binary_dir()
    specs = gomodules.control_plane_binaries()
    assets = asset_dir()
    todo = [s for s in specs if not _available(s.name, target, assets)]
    if not todo and _executable(target / gomodules.KWOK_STAGES_FILE, need_exec=False):
        report(f"using cached control plane binaries in {target}", True)
        return target
    if assets is not None:
        report(f"using {', '.join(ASSET_BINARIES)} from {KUBEBUILDER_ASSETS}={assets}", True)
    go = go_executable()
    with _locked(target):
        for index, spec in enumerate(todo, start=1):
            if _executable(target / spec.name):  # built meanwhile by a concurrent build
                continue
            report(f"building {spec.name} ({index}/{len(todo)})...", False)
            started = time.monotonic()
            _go_build(go, gomodules.MODULES_ROOT / spec.module, spec.package, spec.ldflags, target / spec.name)
            report(_duration(time.monotonic() - started), True)
        if not (target / gomodules.KWOK_STAGES_FILE).exists():
            _write_kwok_stages(go, target / gomodules.KWOK_STAGES_FILE)
    return target


def build_go_binary(
    name: str, module_dir: Path, package: str, ldflags: Sequence[str] = (), report: Reporter | None = None
) -> Path:
    """Build ``package`` (from the Go module in ``module_dir``) as ``binary_dir()/name`` unless it
    is already there. Put the tool's version in ``name`` or ``module_dir``'s go.mod/go.sum: the
    cache is keyed by the control plane's sources only."""
    report = report or printer()
    target = binary_dir()
    path = target / name
    if _executable(path):
        return path
    go = go_executable()
    with _locked(target):
        if not _executable(path):
            report(f"building {name}...", False)
            started = time.monotonic()
            _go_build(go, Path(module_dir), package, tuple(ldflags), path)
            report(_duration(time.monotonic() - started), True)
    return path


def _available(name: str, target: Path, assets: Path | None) -> bool:
    return _executable(target / name) or (assets is not None and _executable(assets / name))


def _executable(path: Path, need_exec: bool = True) -> bool:
    return path.is_file() and (not need_exec or os.access(path, os.X_OK))


def _go_build(go: Path, module_dir: Path, package: str, ldflags: tuple[str, ...], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent.parent, prefix=f".{output.name}-") as tmp:
        staged = Path(tmp) / output.name
        command = [
            str(go), "build", "-trimpath", f"-ldflags={' '.join(('-s', '-w', *ldflags))}",
            "-o", str(staged), package,
        ]
        result = subprocess.run(
            command, cwd=module_dir, env=_go_env(go), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.strip().splitlines()[-30:])
            raise BuildError(f"go build of {output.name} ({package}) failed in {module_dir}:\n{tail}")
        os.replace(staged, output)


def _write_kwok_stages(go: Path, output: Path) -> None:
    result = subprocess.run(
        [str(go), "list", "-m", "-f", "{{.Dir}}", gomodules.KWOK_MODULE],
        cwd=gomodules.MODULES_ROOT / "kwok", env=_go_env(go), capture_output=True, text=True, check=False,
    )
    module_dir = Path(result.stdout.strip())
    if result.returncode != 0 or not module_dir.is_dir():
        raise BuildError(f"cannot locate the {gomodules.KWOK_MODULE} module: {result.stderr.strip()}")
    stages = [yaml.safe_load((module_dir / source).read_text()) for source in gomodules.KWOK_STAGE_SOURCES]
    for stage in stages:
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["delay"] = {"durationMilliseconds": 0, "durationFrom": {
                "expressionFrom": f'.metadata.annotations["{gomodules.KWOK_POD_READY_DELAY_ANNOTATION}"]'}}
    staged = output.with_name(f".{output.name}.tmp")
    staged.write_text(yaml.dump_all(stages, Dumper=_BlockDumper, sort_keys=False))
    os.replace(staged, output)


class _BlockDumper(yaml.SafeDumper):
    """Keeps kwok's multi-line status templates readable (literal blocks)."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _go_env(go: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{go.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("CGO_ENABLED", "0")
    return env


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Serialise concurrent builds into the same cache directory."""
    target.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


def main() -> int:
    try:
        build()
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
