"""Where one relay process spends its CPU (prints figures; not a test).

Starts the canned nginx upstream and one relay worker (in-process state, or ``--redis``), loads
it with wrk like bench/relay/run.py, and prints CPU per request per thread (event loop,
pyreqwest's Tokio thread, the log writer) and, with py-spy (``pip install py-spy``), the
share of the event-loop thread's samples per function (inclusive).

Run:  .venv/bin/python bench/relay/profile_relay.py [--duration 10] [--redis] [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import run as bench

RELAY = str(Path(sys.executable).with_name("otp-relay"))


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread name of ``pid`` (threads of one name summed)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat.split("(", 1)[1].rsplit(")", 1)[0]
        fields = stat.rsplit(")", 1)[1].split()
        totals[name] += (int(fields[11]) + int(fields[12])) / ticks
    return totals


def _function(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})"


def loop_shares(raw: Path, top: int) -> list[tuple[float, str]]:
    """Inclusive share of each function in the samples of the thread running the event loop."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    loop_thread = next((frames[0] for frames, _ in stacks if any("Runner.run" in f for f in frames)), None)
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in stacks:
        if frames[0] != loop_thread:
            continue
        total += count
        names = {_function(frame) for frame in frames[1:]} or {"(no Python frame: inside the event loop)"}
        for name in names:
            inclusive[name] += count
    return [(100 * n / total, name) for name, n in inclusive.most_common(top)] if total else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis", action="store_true", help="Redis state instead of in-process")
    parser.add_argument("--top", type=int, default=40, help="functions listed from the py-spy profile")
    args = parser.parse_args()
    bench.need_tools()
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    with tempfile.TemporaryDirectory(prefix="profile-relay-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        up_port = bench.start_upstream(stack, workdir)
        extra, store = {}, None
        if args.redis:
            store, redis_port = bench.start_redis(stack, workdir)
            extra["STATE_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        port, admin_port = bench.free_port(), bench.free_port()
        relay = bench.start(stack, [RELAY], port, workdir / "relay.log",
                            bench.relay_env(workdir, port, admin_port, f"http://127.0.0.1:{up_port}", **extra))
        bench.wait_ready(admin_port)
        url = f"http://127.0.0.1:{port}/v1/messages"
        print(bench.HEADER)
        bench.wrk("warm-up", url, bench.presigned(workdir / "warm.tsv", 5000, "w"), 2, args.connections,
                  server=relay, store=store)
        spy = None
        raw = workdir / "profile.raw"
        if py_spy:
            spy = subprocess.Popen([py_spy, "record", "-p", str(relay.pid), "-o", str(raw), "-f", "raw",
                                    "-r", "200", "--threads", "--nonblocking", "-d", str(args.duration)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)  # attached before the load starts
        before = thread_cpu(relay.pid)
        result = bench.wrk("otp-relay" + (", Redis state" if args.redis else ", in-process state"), url,
                           bench.presigned(workdir / "load.tsv", 16000 * args.duration, "l"),
                           args.duration, args.connections, server=relay, store=store)
        after = thread_cpu(relay.pid)
        print("\nCPU per accepted request by thread:")
        for name, seconds in sorted(after.items(), key=lambda item: -item[1]):
            spent = (seconds - before.get(name, 0.0)) / max(1, result.accepted) * 1e6
            if spent >= 1:
                print(f"  {name:<20} {spent:6.0f} us")
        if spy is None:
            print("\n(py-spy not installed: pip install py-spy for the per-function profile)")
            return 0
        spy.wait(timeout=args.duration + 60)
        print("\nevent-loop thread, share of samples per function (inclusive):")
        for share, name in loop_shares(raw, args.top):
            print(f"  {share:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
