"""The operator's opt-in memory report (OTP_OPERATOR_TRACEMALLOC): groups, lines, gc types."""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from otp_operator import memory_report


@pytest.fixture
def tracing():
    handler = signal.getsignal(signal.SIGUSR1)
    yield
    tracemalloc.stop()
    signal.signal(signal.SIGUSR1, handler)


@pytest.mark.parametrize(("filename", "group"), [
    ("/venv/lib/python3.11/site-packages/kopf/_core/engines/daemons.py", "kopf"),
    ("/work/operator/otp_operator/reconcile.py", "otp_operator.reconcile"),
    ("/work/operator/otp_operator/auth0/sync.py", "otp_operator.auth0.sync"),
    ("/venv/lib/python3.11/site-packages/auth0/management/actions.py", "auth0 SDK"),
    ("/venv/lib/python3.11/site-packages/httpcore/_async/connection.py", "httpx/httpcore"),
    ("/venv/lib/python3.11/site-packages/httpx/_client.py", "httpx/httpcore"),
    ("/venv/lib/python3.11/site-packages/aiohttp/client.py", "aiohttp"),
    ("/usr/lib/python3.11/ssl.py", "ssl"),
    ("/usr/lib/python3.11/asyncio/sslproto.py", "ssl"),
    ("/usr/lib/python3.11/asyncio/base_events.py", "asyncio"),
    ("<frozen importlib._bootstrap_external>", "importlib (code of imported modules)"),
    ("/venv/lib/python3.11/site-packages/pydantic/main.py", "pydantic"),
    ("/usr/lib/python3.11/json/decoder.py", "json"),
    ("/usr/lib/python3.11/collections/__init__.py", "other"),
])
def test_files_are_grouped_by_package_and_operator_module(filename: str, group: str) -> None:
    assert memory_report.group_of(filename) == group


def test_sigusr1_writes_the_report_with_the_memory_where_it_was_allocated(tmp_path: Path, tracing: None) -> None:
    target = tmp_path / "memory.json"
    assert memory_report.install_from_environment({memory_report.FRAMES_ENV: "1",
                                                   memory_report.PATH_ENV: str(target)})
    held = json.loads("[" + ",".join(['"%08d"' % i for i in range(20000)]) + "]")  # allocated in json

    os.kill(os.getpid(), signal.SIGUSR1)

    report = json.loads(target.read_text())
    groups = {entry["group"]: entry["size_bytes"] for entry in report["groups"]}
    assert groups["json"] >= 20000 * 40  # 20 000 strings of 8 characters, ≥ 40 bytes each
    assert groups["json"] <= report["traced_bytes"]
    assert any(line["group"] == "json" and line["file"].endswith("json/decoder.py") for line in report["lines"])
    assert len(report["lines"]) <= memory_report.TOP
    by_type = {entry["type"]: entry for entry in report["gc_objects_by_type"]}
    assert by_type["list"]["count"] >= 1 and by_type["list"]["size_bytes"] >= 20000 * 8
    assert not (tmp_path / "memory.json.partial").exists()
    del held


def test_unset_leaves_tracemalloc_off() -> None:
    assert not memory_report.install_from_environment({})
    assert not tracemalloc.is_tracing()


@pytest.mark.parametrize("environ", [
    {memory_report.FRAMES_ENV: "many", memory_report.PATH_ENV: "/tmp/report.json"},
    {memory_report.FRAMES_ENV: "0", memory_report.PATH_ENV: "/tmp/report.json"},
    {memory_report.FRAMES_ENV: "5"},
])
def test_a_bad_setting_is_refused_before_tracing(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=memory_report.FRAMES_ENV):
        memory_report.install_from_environment(environ)
    assert not tracemalloc.is_tracing()
