"""Benchmark: the relay beside nginx and bare forwarders, in one run (prints figures; not a test).

Load comes from wrk in its own process, replaying distinct pre-signed requests (the relay
refuses a replayed signature, and a repeated message would be an idempotent replay). The
upstream is nginx returning a canned 8x8 answer, so it is never the bottleneck (row "upstream
directly" shows its ceiling). Rows:
  saturation (32 connections): upstream directly, nginx proxy_pass, every bare forwarder
      (bench/relay/forwarder.py: candidate clients on aiohttp's server, candidate servers with
      aiohttp's client), the relay with in-process state, with Redis state, with 2 workers;
  paced (~1,800 req/s, 8x8's default per-subaccount rate): upstream, nginx, the relay, for the
      latency the relay adds.
CPU per accepted request (user + system time of the server under test and its child
processes, over the requests it answered 2xx) is the headline: it stays stable on a noisy
machine. RSS is the largest peak resident set of one process of the server under test.
Writes the table (relay-bench.txt) and a latency plot (relay-latency.png) to --out.

Run:  make bench   or   .venv/bin/python bench/relay/run.py [--duration 10] [--connections 32]
Needs wrk, nginx and redis-server (make bench installs them) and the bench extra
(pip install -e '.[bench]': aiosonic, granian, matplotlib; pyreqwest is the relay's own).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "relay"))
from otp_relay.signing import sign  # noqa: E402

SIGNING_KEY = "bench-signing-key"
SUBACCOUNT = "bench_sub"
PATH = f"/api/v1/subaccounts/{SUBACCOUNT}/messages"
CANNED = ('{"umid":"0b5e4b4c-1f0e-4c4f-9f43-3c2a4b8a9f10","clientMessageId":"x",'
          '"destination":"6591234567","encoding":"GSM7","status":{"code":"QUEUED",'
          '"description":"SMS is accepted and queued for processing"}}')
PIN = False  # --pin
RECIPIENTS = [f"+6591{n:06d}"[:11] for n in range(100)]
# (client, server) of the bare forwarders: every client on aiohttp's server, every server with
# aiohttp's client, and the two Rust-backed pieces together.
FORWARDERS = (
    ("aiohttp", "aiohttp"), ("aiosonic", "aiohttp"), ("pyreqwest", "aiohttp"),
    ("httpx", "aiohttp"), ("aiohttp", "granian"), ("aiohttp", "uvicorn"), ("pyreqwest", "granian"),
)
PERCENTILES = ("p50", "p90", "p99", "p999")


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    failed: int
    latency_ms: dict[str, float]
    cpu_us: float | None = None  # of the server under test, per accepted request
    rss_mb: float | None = None
    store_cpu_us: float | None = None  # of redis-server, per accepted request

    @property
    def accepted(self) -> int:
        return self.requests - self.failed

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds


def need_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx", "redis-server") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"bench/relay: missing {', '.join(missing)}. Install them with:\n"
              "  apt-get update && apt-get install -y wrk nginx-light redis-server", file=sys.stderr)
        sys.exit(2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def pinned(command: list[str], cpu: int) -> list[str]:
    """Pin to one CPU when there are two or more: the load side (wrk and the canned upstream)
    on CPU 0, the server under test on CPU 1, the same split in every row."""
    if not PIN or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def start(stack: ExitStack, command: list[str], port: int, log: Path, env: dict | None = None,
          cpu: int = 1) -> subprocess.Popen:
    with open(log, "ab") as out:
        process = subprocess.Popen(pinned(command, cpu), stdout=out, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop)
    wait_port(port, process)
    return process


def start_nginx(stack: ExitStack, workdir: Path, role: str, port: int, upstream_port: int, body: str,
                cpu: int) -> subprocess.Popen:
    conf = (HERE / "nginx.conf.template").read_text().format(
        role=role, workdir=workdir, port=port, upstream_port=upstream_port, body=body)
    path = workdir / f"{role}.conf"
    path.write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return start(stack, [nginx, "-c", str(path), "-e", str(workdir / f"{role}-error.log")],
                 port, workdir / f"{role}.log", cpu=cpu)


def start_upstream(stack: ExitStack, workdir: Path) -> int:
    """The canned 8x8 answer (nginx) on a free port, and the relay's key files in ``workdir``;
    returns the port."""
    port = free_port()
    start_nginx(stack, workdir, "upstream", port, port,
                f"location {PATH} {{ default_type application/json; return 200 '{CANNED}'; }}", cpu=0)
    (workdir / "apikey").write_text("bench-api-key\n")
    (workdir / "signing").write_text(SIGNING_KEY + "\n")
    return port


def start_redis(stack: ExitStack, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    return start(stack, command, port, workdir / "redis.log", cpu=0), port


def presigned(path: Path, count: int, tag: str) -> Path:
    """``count`` distinct signed requests (distinct idempotency keys: the tag is in the text),
    "<ts>\\t<signature>\\t<body>" per line; signed now, so each file is written just before use."""
    ts = int(time.time())
    with open(path, "w") as out:
        for i in range(count):
            code = f"{i % 1_000_000:06d}"
            body = json.dumps({
                "recipient": RECIPIENTS[i % len(RECIPIENTS)], "text": f"Your {tag} code is {code}",
                "message_type": "otp_verify", "delivery_method": "text", "code": code, "locale": "en",
            }, separators=(",", ":"))
            out.write(f"{ts}\t{sign(SIGNING_KEY, ts, body.encode())}\t{body}\n")
    return path


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (workers of the relay, granian's worker process)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*"):
            try:
                pids.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
        index += 1
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pids: list[int]) -> float:
    """The largest peak resident set among ``pids`` (per process, in MB)."""
    peak = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def rss_mb(pid: int) -> float:
    """The resident set of process ``pid`` now (VmRSS, MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle_rss_mb(workdir: Path, upstream: str, settle: float = 2.0) -> float:
    """VmRSS of one ``otp-relay`` process with the defaults (and the bench's keys and limits),
    ``settle`` seconds after it answered ready, before any request."""
    port, admin_port = free_port(), free_port()
    with ExitStack() as stack:
        process = start(stack, [str(Path(sys.executable).with_name("otp-relay"))], port,
                        workdir / "idle-relay.log", relay_env(workdir, port, admin_port, upstream))
        wait_ready(admin_port)
        time.sleep(settle)
        return rss_mb(process.pid)


def wrk(name: str, url: str, requests_file: Path, duration: int, connections: int, pause_ms: int = 0,
        server: subprocess.Popen | None = None, store: subprocess.Popen | None = None) -> Result:
    command = pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
                      "-s", str(HERE / "post.lua"), url, "--", str(requests_file), str(pause_ms)], 0)
    pids = tree(server.pid) if server else []
    store_pids = [store.pid] if store else []
    cpu_before, store_before = cpu_seconds(pids), cpu_seconds(store_pids)
    output = subprocess.run(command, capture_output=True, text=True, check=True,
                            timeout=duration + 60).stdout
    data = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    result = Result(name, data["requests"], data["duration_us"] / 1e6, data["non2xx"] + data["socket_errors"],
                    {p: data[f"{p}_us"] / 1000 for p in PERCENTILES})
    if server and result.accepted:
        result.cpu_us = (cpu_seconds(pids) - cpu_before) / result.accepted * 1e6
        result.rss_mb = peak_rss_mb(pids)
    if store and result.accepted:
        result.store_cpu_us = (cpu_seconds(store_pids) - store_before) / result.accepted * 1e6
    print("  " + row(result), flush=True)
    return result


HEADER = (f"  {'':<44} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'CPU us/req':>10}"
          f" {'RSS MB':>7}")


def row(result: Result) -> str:
    cpu = f"{result.cpu_us:10.0f}" if result.cpu_us else f"{'-':>10}"
    rss = f"{result.rss_mb:7.1f}" if result.rss_mb else f"{'-':>7}"
    store = f"  (+ redis-server {result.store_cpu_us:.0f} us/req)" if result.store_cpu_us else ""
    return (f"{result.name:<44} {result.per_second:8,.0f} {result.latency_ms['p50']:7.2f}"
            f" {result.latency_ms['p99']:7.2f} {result.failed:6d} {cpu} {rss}{store}")


def wait_ready(admin_port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def relay_env(workdir: Path, port: int, admin_port: int, upstream: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_RELAY_")}
    env.update({
        "OTP_RELAY_LISTEN": f"127.0.0.1:{port}", "OTP_RELAY_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
        "OTP_RELAY_SMS_BASE_URL": upstream, "OTP_RELAY_INSECURE_UPSTREAM": "true",
        "OTP_RELAY_SUBACCOUNT": SUBACCOUNT,
        "OTP_RELAY_API_KEY_FILE": str(workdir / "apikey"),
        "OTP_RELAY_SIGNING_KEY_FILE": str(workdir / "signing"),
        "OTP_RELAY_GLOBAL_LIMIT": "1000000/s", "OTP_RELAY_MAX_IDEMPOTENCY_KEYS": "4000000000",
        "OTP_RELAY_PER_PREFIX": "1000000/s", "OTP_RELAY_COUNTRY_HOUR": "4000000000/1h",
        "OTP_RELAY_COUNTRY_DAY": "4000000000/24h", "OTP_RELAY_PER_RECIPIENT": "1000000/s",
        **{f"OTP_RELAY_{k}": v for k, v in extra.items()},
    })
    return env


def plot(results: list[Result], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  bench-only dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(11, 0.45 * len(results) + 1.5))
    names = [r.name for r in results]
    height = 0.8 / len(PERCENTILES)
    for index, percentile in enumerate(PERCENTILES):
        axis.barh([y + index * height for y in range(len(results))],
                  [r.latency_ms[percentile] for r in results], height=height,
                  label=percentile.replace("p999", "p99.9"))
    axis.set_yticks([y + 1.5 * height for y in range(len(results))], names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("latency (ms, log scale)")
    axis.set_title("otp-relay benchmark: latency percentiles per row (wrk)")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per row (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent requests (default 32)")
    parser.add_argument("--paced-rate", type=int, default=1800, help="target req/s of paced rows")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and plot go")
    parser.add_argument("--pin", action="store_true",
                        help="pin load side to CPU 0 and the server under test to CPU 1 (only on an idle machine)")
    parser.add_argument("--skip-forwarders", action="store_true", help="skip the bare forwarders")
    args = parser.parse_args()
    global PIN
    PIN = args.pin
    need_tools()
    d, c = args.duration, args.connections
    relay_bin = str(Path(sys.executable).with_name("otp-relay"))
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        up_port, proxy_port = start_upstream(stack, workdir), free_port()
        proxy = start_nginx(stack, workdir, "proxy", proxy_port, up_port,
                            "location / { proxy_pass http://sms; proxy_http_version 1.1; "
                            "proxy_set_header Connection \"\"; }", cpu=1)
        redis, redis_port = start_redis(stack, workdir)
        upstream = f"http://127.0.0.1:{up_port}"
        direct_url = upstream + PATH
        filler = presigned(workdir / "filler.tsv", 1000, "f")

        print(f"saturation: 1 wrk thread, {c} connections, {d}s per row, "
              + ("load side on CPU 0, server under test on CPU 1" if PIN
                 else f"{os.cpu_count()} cores shared by wrk, the upstream and the server under test"))
        print(HEADER)
        direct = wrk("upstream directly (canned nginx)", direct_url, filler, d, c)
        nginx = wrk("nginx proxy_pass", f"http://127.0.0.1:{proxy_port}{PATH}", filler, d, c, server=proxy)

        forwarders: list[Result] = []
        if not args.skip_forwarders:
            for client, server in FORWARDERS:
                port = free_port()
                with ExitStack() as fstack:
                    process = start(fstack, [sys.executable, str(HERE / "forwarder.py"), str(port), direct_url,
                                             client, server], port, workdir / f"forwarder-{client}-{server}.log")
                    forwarders.append(wrk(f"bare: {server} server + {client} client",
                                          f"http://127.0.0.1:{port}/v1/messages", filler, d, c, server=process))

        relays: dict[str, Result] = {}
        paced: list[Result] = []
        configs = (("in-process state, 1 worker", {}),
                   ("Redis state, 1 worker", {"STATE_URL": f"redis://127.0.0.1:{redis_port}/0"}),
                   ("Redis state, 2 workers", {"STATE_URL": f"redis://127.0.0.1:{redis_port}/0", "WORKERS": "2"}))
        for index, (label, extra) in enumerate(configs):
            port, admin_port = free_port(), free_port()
            with ExitStack() as rstack:
                process = start(rstack, [relay_bin], port, workdir / f"relay{index}.log",
                                relay_env(workdir, port, admin_port, upstream, STATE_PREFIX=f"bench{index}", **extra))
                wait_ready(admin_port)
                url = f"http://127.0.0.1:{port}/v1/messages"
                relays[label] = wrk(f"otp-relay, {label}", url, presigned(workdir / "sat.tsv", 16000 * d, f"s{index}"),
                                    d, c, server=process, store=redis if "STATE_URL" in extra else None)
                if index == 0:
                    paced_connections = max(1, round(args.paced_rate / 100))  # each: one request per ~10 ms
                    pause = round(paced_connections * 1000 / args.paced_rate)
                    print(f"paced: {paced_connections} connections, {pause} ms pause each (~{args.paced_rate} req/s)")
                    paced.append(wrk("paced: otp-relay, in-process state", url,
                                     presigned(workdir / "paced.tsv", 3 * args.paced_rate * d // 2, "p"),
                                     d, paced_connections, pause, server=process))
        paced.insert(0, wrk("paced: upstream directly", direct_url, filler, d, paced_connections, pause))
        paced.insert(1, wrk("paced: nginx proxy_pass", f"http://127.0.0.1:{proxy_port}{PATH}", filler, d,
                            paced_connections, pause, server=proxy))

    one = relays["in-process state, 1 worker"]
    redis_one = relays["Redis state, 1 worker"]
    two = relays["Redis state, 2 workers"]
    best = max(forwarders, key=lambda r: r.per_second) if forwarders else None
    p_direct, p_nginx, p_relay = paced
    added_p99 = p_relay.latency_ms["p99"] - p_direct.latency_ms["p99"]
    load = os.getloadavg()
    lines = [HEADER, *("  " + row(r) for r in (direct, nginx, *forwarders, *relays.values(), *paced)), "",
             f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
             f"({os.cpu_count()} cores; wrk, the upstream and the server under test share them)",
             f"relay / nginx proxy_pass throughput:     {one.per_second / nginx.per_second:6.3f}"]
    if best:
        lines.append(f"relay / best bare forwarder throughput:  {one.per_second / best.per_second:6.3f}"
                     f"  (best: {best.name})")
    lines += [
        f"relay CPU per accepted request (1 worker, in-process): {one.cpu_us:.0f} us"
        f"  (nginx proxy_pass: {nginx.cpu_us:.0f} us)",
        f"Redis state over in-process: {redis_one.cpu_us - one.cpu_us:+.0f} us relay CPU per request"
        f" (+ {redis_one.store_cpu_us or 0:.0f} us in redis-server)",
        f"2 workers / 1 worker throughput (Redis state): {two.per_second / redis_one.per_second:.2f}x",
        f"p99 added over direct at ~{p_relay.per_second:,.0f} req/s: relay {added_p99:+.2f} ms,"
        f" nginx {p_nginx.latency_ms['p99'] - p_direct.latency_ms['p99']:+.2f} ms",
    ]
    targets = [
        ("CPU per accepted request, 1 worker, in-process <= 120 us", one.cpu_us <= 120),
        ("relay / nginx throughput >= 0.25", one.per_second / nginx.per_second >= 0.25),
        ("p99 added latency over direct at ~1,800 req/s <= 2 ms", added_p99 <= 2),
        ("RSS per worker <= 60 MB", max(r.rss_mb or 0 for r in relays.values()) <= 60),
        ("Redis state <= +40 us CPU per request over in-process", redis_one.cpu_us - one.cpu_us <= 40),
        ("no failed relay requests", all(r.failed == 0 for r in (*relays.values(), p_relay))),
    ]
    lines += [f"target {'met   ' if ok else 'MISSED'} {label}" for label, ok in targets]
    args.out.mkdir(parents=True, exist_ok=True)
    table, picture = args.out / "relay-bench.txt", args.out / "relay-latency.png"
    print("\n" + "\n".join(lines[lines.index("") + 1:]))  # the rows were printed as they came
    table.write_text("\n".join(lines) + "\n")
    plot([direct, nginx, *forwarders, *relays.values(), *paced], picture)
    print(f"\ntable: {table}\nplot:  {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
