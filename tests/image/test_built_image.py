"""The image itself, built by podman from the Dockerfile: only the product (no compiler, pip,
pip cache, build sources, sandbox or tests), both commands run, as the non-root user the chart
and the relay pods expect."""

from __future__ import annotations

import json

import pytest

from otp_sandbox import image as images

pytestmark = pytest.mark.container

# Walks the image's filesystem from inside it; prints JSON facts (file lists stay short: at most 20).
INVENTORY = r"""
import importlib.util, json, os, shutil
found = {"compilers": [], "pip_caches": [], "build_leftovers": [], "project_extras": []}
for tool in ("gcc", "cc", "c++", "g++", "clang", "ld", "make", "cargo", "rustc"):
    if shutil.which(tool):
        found["compilers"].append(shutil.which(tool))
for top in ("/usr", "/opt", "/root", "/home", "/tmp", "/var", "/src", "/wheels", "/nonexistent"):
    for root, dirs, files in os.walk(top):
        if root.startswith(("/usr/share/python-wheels",)):
            continue
        for name in dirs + files:
            path = os.path.join(root, name)
            if "/.cache/pip" in path or name in ("pip-cache", "http-v2") or path.endswith("/.cache/pip"):
                found["pip_caches"].append(path)
            if path in ("/src", "/wheels") or name.endswith((".whl", ".tar.gz")) and "/opt/" in path:
                found["build_leftovers"].append(path)
            if name in ("otp_sandbox", "conftest.py", "pyproject.toml", "Dockerfile") or "otp_relay_operator_sandbox" in name:
                found["project_extras"].append(path)
for top in ("/src", "/wheels"):
    if os.path.exists(top):
        found["build_leftovers"].append(top)
found = {k: sorted(set(v))[:20] for k, v in found.items()}
found["pip_in_venv"] = os.path.exists("/opt/otp-relay-operator/bin/pip")
found["sandbox_importable"] = importlib.util.find_spec("otp_sandbox") is not None
found["product_importable"] = all(importlib.util.find_spec(m) for m in ("otp_operator", "otp_relay"))
found["uid"] = os.getuid()
print(json.dumps(found))
"""


def run(image: images.Image, *command: str, user: str | None = None) -> str:
    user_flags = ("--user", user) if user else ()
    result = images.podman("run", "--rm", *images.CONTAINER_FLAGS, *user_flags, image.reference, *command,
                           check=False, timeout=300)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def test_the_image_holds_only_the_product(built_image: images.Image) -> None:
    facts = json.loads(run(built_image, "python", "-c", INVENTORY, user="0"))
    assert facts["product_importable"]
    assert facts["compilers"] == []
    assert facts["pip_caches"] == []
    assert facts["build_leftovers"] == []
    assert facts["project_extras"] == []
    assert not facts["sandbox_importable"]
    assert not facts["pip_in_venv"], "pip is removed from the runtime venv"


def test_both_commands_run_as_the_relay_user(built_image: images.Image) -> None:
    details = images.inspect(built_image.reference)
    config = details["Config"]
    uid, _, gid = config["User"].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), "runAsNonRoot needs a numeric non-root USER"
    assert config["Cmd"][0] == "otp-operator"
    assert details["Labels"]["org.opencontainers.image.version"] == images.version()
    assert json.loads(run(built_image, "python", "-c", "import json, os; print(json.dumps(os.getuid()))")) == int(uid)
    for command in ("otp-operator", "otp-relay"):
        assert "usage" in run(built_image, command, "--help").lower(), command
