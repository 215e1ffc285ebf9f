"""``otp-sandbox image``: build the project's Dockerfile with podman on a machine without a Docker
engine or a reachable container registry.

The Dockerfile's default base (``python:3.11-slim-bookworm``) lives in a registry; here the same
kind of base is made from Debian's packages with mmdebstrap, imported into podman once and cached
under ``$OTP_SANDBOX_CACHE/images/``. The build then runs the unchanged Dockerfile with that base
as the ``PYTHON_IMAGE`` build argument, exactly as ``docker build`` would with the public base.

podman runs as root with ``--runtime runc`` (crun refuses this host's hybrid cgroups), explicit
ulimits (podman lowers its own nproc limit and then cannot raise a container's) and host
networking (no CNI setup needed for a build).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controlplane.builder import Reporter, cache_root, printer
from .controlplane.node import PAUSE_COMMAND, NodeImages

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
REPOSITORY = "localhost/otp-relay-operator"
BASE_REPOSITORY = "localhost/otp-python-base"
PAUSE_REPOSITORY = "localhost/otp-sandbox-pause"
BASE_SUITE = "bookworm"
# What the Dockerfile needs from its base: python with venv (ensurepip), `python` on PATH,
# groupadd/useradd, and CA certificates for the relay's and operator's outbound TLS.
BASE_PACKAGES = ("python3.11", "python3.11-venv", "python-is-python3", "passwd", "ca-certificates")
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
PODMAN = ("podman", "--runtime", "runc")
CONTAINER_FLAGS = ("--network", "host", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
# Where the host's pip trusts a TLS-inspecting proxy (if any): mounted into the build's RUN steps
# only (build-time volumes are never committed to a layer).
HOST_PIP_TRUST = (Path("/etc/pip.conf"), Path("/etc/ssl/certs/ca-certificates.crt"))
TOOLS_HINT = "podman, runc and mmdebstrap are needed (`make image` installs them from Debian)"


class ImageError(RuntimeError):
    """The image (or its base) could not be built; the message says why."""


@dataclass(frozen=True)
class Image:
    reference: str
    id: str
    size: int

    def summary(self) -> str:
        return (
            f"image {self.reference}\n"
            f"  id   {self.id}\n"
            f"  size {self.size / 1e6:.1f} MB\n"
            f"run the relay:    podman --runtime runc run --rm {' '.join(CONTAINER_FLAGS)} {self.reference} "
            f"otp-relay --help\n"
            f"run the operator: podman --runtime runc run --rm {' '.join(CONTAINER_FLAGS)} "
            f"-v $KUBECONFIG:/kubeconfig:ro -e KUBECONFIG=/kubeconfig {self.reference}\n"
            f"push it:          podman push {self.reference} REGISTRY/otp-relay-operator:TAG"
        )


def version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def reference() -> str:
    return f"{REPOSITORY}:{version()}"


def base_reference() -> str:
    key = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_EXCLUDES]).encode()
    return f"{BASE_REPOSITORY}:{BASE_SUITE}-{hashlib.sha256(key).hexdigest()[:12]}"


def podman(*args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    _require("podman", "runc")
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise ImageError(f"podman {' '.join(args[:2])} failed ({result.returncode}):\n{_tail(result)}")
    return result


def exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def inspect(ref: str) -> dict[str, Any]:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def ensure_base(report: Reporter) -> str:
    """The local Python base in podman: imported from the cached tarball, made first if needed."""
    ref = base_reference()
    if exists(ref):
        return ref
    tarball = cache_root() / "images" / f"{ref.rsplit('/', 1)[1].replace(':', '-')}.tar"
    if not tarball.is_file():
        _require("mmdebstrap")
        report(f"making the Python base from Debian {BASE_SUITE} packages with mmdebstrap...", False)
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".base-") as tmp:
            staged = Path(tmp) / tarball.name
            command = [
                "mmdebstrap", "--variant=essential", f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_EXCLUDES),
                BASE_SUITE, str(staged),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
            if result.returncode != 0:
                raise ImageError(f"mmdebstrap failed ({result.returncode}):\n{_tail(result)}")
            os.replace(staged, tarball)
        report("done", True)
    podman("import", "--change", "CMD=[\"python3\"]", str(tarball), ref)
    return ref


def build(report: Reporter | None = None) -> Image:
    """Build the Dockerfile on the local base (podman's layer cache makes a rebuild quick)."""
    report = report or printer()
    base = ensure_base(report)
    ref = reference()
    report(f"building {ref} from {DOCKERFILE.name} (base {base})...", False)
    mounts = [f"--volume={p}:{p}:ro" for p in HOST_PIP_TRUST if p.is_file()]
    podman(
        "build", *CONTAINER_FLAGS, *mounts, "--file", str(DOCKERFILE), "--tag", ref,
        "--build-arg", f"PYTHON_IMAGE={base}",
        "--build-arg", f"REVISION={_git('rev-parse', 'HEAD')}",
        # The commit's time, not the clock's: an unchanged tree rebuilds from podman's cache.
        "--build-arg", f"CREATED={_git('log', '-1', '--format=%cI')}",
        str(REPO_ROOT),
    )
    report("done", True)
    details = inspect(ref)
    return Image(ref, details["Id"], int(details["Size"]))


def node_images(report: Reporter | None = None) -> NodeImages:
    """The project's image and a pod-sandbox image (the base, sleeping) in one docker-archive
    (what ``ctr images import`` loads; the shared base layer is stored once), cached by image ids."""
    report = report or printer()
    product = build(report)
    pause = _ensure_pause()
    key = hashlib.sha256(f"{product.id} {inspect(pause)['Id']}".encode()).hexdigest()[:12]
    directory = cache_root() / "images"
    archive = directory / f"node-{key}.tar"
    if not archive.is_file():
        for old in directory.glob("node-*.tar"):
            old.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".node-") as tmp:
            staged = Path(tmp) / archive.name
            podman("save", "--multi-image-archive", "--format", "docker-archive", "--output", str(staged),
                   product.reference, pause)
            os.replace(staged, archive)
    return NodeImages(pause=pause, archives=(archive,))


def _ensure_pause() -> str:
    base = base_reference()
    ref = f"{PAUSE_REPOSITORY}:{base.rsplit(':', 1)[1]}"
    if not exists(ref):
        with tempfile.TemporaryDirectory(prefix="otp-pause-") as tmp:
            containerfile = Path(tmp) / "Containerfile"
            containerfile.write_text(f"FROM {base}\nCMD {json.dumps(list(PAUSE_COMMAND))}\n")
            podman("build", *CONTAINER_FLAGS, "--file", str(containerfile), "--tag", ref, tmp)
    return ref


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ImageError(f"{', '.join(missing)} not found: {TOOLS_HINT}")


def _tail(result: subprocess.CompletedProcess[str], lines: int = 30) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("image", help="build the project's image with podman on a local Debian base")
    parser.set_defaults(func=_image)


def _image(args: argparse.Namespace) -> int:
    try:
        image = build(printer(sys.stderr))
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(image.summary())
    return 0
