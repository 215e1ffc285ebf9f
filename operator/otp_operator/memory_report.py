"""Opt-in report of where the operator's memory goes (for the benchmark, not for production).

With ``OTP_OPERATOR_TRACEMALLOC=<frames>`` set, :func:`install_from_environment` starts
tracemalloc (keeping ``frames`` frames per allocation) and, on SIGUSR1, writes a JSON report to
``$OTP_OPERATOR_MEMORY_REPORT``: traced memory grouped by package or operator module and by line,
and the objects the garbage collector tracks, counted and sized (shallow) by type. tracemalloc
slows every allocation down: never set it where timings matter.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FRAMES_ENV = "OTP_OPERATOR_TRACEMALLOC"
PATH_ENV = "OTP_OPERATOR_MEMORY_REPORT"
TOP = 30

# (group, path parts that identify it), first match wins; otp_operator's own modules are
# grouped by module before these.
_PACKAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("kopf", ("kopf",)),
    ("httpx/httpcore", ("httpx", "httpcore", "h11", "h2", "anyio", "sniffio")),
    ("aiohttp", ("aiohttp", "multidict", "yarl", "aiosignal", "frozenlist")),
    ("auth0 SDK", ("auth0",)),
    ("pydantic", ("pydantic", "pydantic_core")),
    ("kubernetes client", ("kubernetes", "urllib3")),
    ("prometheus_client", ("prometheus_client",)),
    ("json", ("json",)),
    ("asyncio", ("asyncio",)),
)


def group_of(filename: str) -> str:
    """The package (or ``otp_operator.<module>``) a source file belongs to."""
    parts = Path(filename).parts
    if "otp_operator" in parts:
        below = parts[len(parts) - 1 - parts[::-1].index("otp_operator"):]
        return ".".join(below).removesuffix(".py")
    if filename.startswith("<frozen importlib"):
        return "importlib (code of imported modules)"
    if (parts and parts[-1] in ("ssl.py", "sslproto.py")) or "ssl" in parts:  # sslproto: asyncio's TLS buffers
        return "ssl"
    for group, names in _PACKAGES:
        if any(name in parts for name in names):
            return group
    return "other"


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def build_report(limit: int = TOP) -> dict[str, Any]:
    """The report as a JSON-ready dict (tracemalloc must be tracing)."""
    if not tracemalloc.is_tracing():
        raise RuntimeError(f"tracemalloc is not tracing (set {FRAMES_ENV})")
    snapshot = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
    groups: dict[str, list[int]] = {}
    for stat in snapshot.statistics("filename"):
        entry = groups.setdefault(group_of(stat.traceback[0].filename), [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    lines = [{"file": _short(stat.traceback[0].filename), "line": stat.traceback[0].lineno,
              "group": group_of(stat.traceback[0].filename), "size_bytes": stat.size, "count": stat.count}
             for stat in snapshot.statistics("lineno")[:limit]]
    types: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        entry = types.setdefault(type(obj).__qualname__, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj, 0)
    current, peak = tracemalloc.get_traced_memory()
    return {
        "traced_bytes": current,
        "traced_peak_bytes": peak,
        "groups": [{"group": name, "size_bytes": size, "count": count}
                   for name, (size, count) in sorted(groups.items(), key=lambda item: -item[1][0])],
        "lines": lines,
        "gc_objects_by_type": [{"type": name, "count": count, "size_bytes": size}
                               for name, (count, size) in sorted(types.items(), key=lambda item: -item[1][1])[:limit]],
    }


def write_report(path: Path) -> None:
    """Write the report whole (a reader waiting for the file never sees half of it)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(build_report(), indent=1))
    partial.replace(path)


def install_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Start tracemalloc and the SIGUSR1 report when the environment asks for it; raises
    ValueError on a bad setting."""
    frames = environ.get(FRAMES_ENV)
    if not frames:
        return False
    if not frames.isdigit() or not 1 <= int(frames) <= 100:
        raise ValueError(f"{FRAMES_ENV} must be a number of frames from 1 to 100, not {frames!r}")
    target = environ.get(PATH_ENV)
    if not target:
        raise ValueError(f"{FRAMES_ENV} is set: {PATH_ENV} must name the file the report is written to")
    path = Path(target)
    tracemalloc.start(int(frames))
    # A plain handler (not the event loop's): it runs between two bytecodes of the main thread,
    # so the report is taken whatever the loop is doing.
    signal.signal(signal.SIGUSR1, lambda signum, frame: write_report(path))
    return True
