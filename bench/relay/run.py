"""Benchmark: the relay against nginx, in one run (prints figures; not a test).

Load comes from wrk in its own process, replaying distinct pre-signed requests (the relay
refuses a replayed signature). The upstream is nginx returning a canned 8x8 answer, so it is
never the bottleneck. Phases:
  saturation (32 connections):   (a) upstream directly, (b) nginx proxy_pass, (c) the relay
  paced (~1,800 req/s):          the same three, for the latency the relay adds at 8x8's
                                 default per-subaccount rate
  library choice:                bare forwarders: aiohttp server vs Starlette/uvicorn, aiohttp's
                                 client vs httpx's AsyncClient
Run:  .venv/bin/python bench/relay/run.py [--duration 10] [--connections 32]
Needs wrk and nginx (Debian: apt-get install -y wrk nginx-light).
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


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    failed: int
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float | None = None  # of the server under test, when measured

    @property
    def accepted_per_second(self) -> float:
        return (self.requests - self.failed) / self.seconds


def need_tools() -> None:
    missing = [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None
               and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        print(f"bench/relay: missing {', '.join(missing)}. Install them with:\n"
              "  apt-get update && apt-get install -y wrk nginx-light", file=sys.stderr)
        sys.exit(2)


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def pinned(command: list[str], cpu: int) -> list[str]:
    """Pin to one CPU when there are two or more: the load side (wrk and the canned upstream)
    on CPU 0, the server under test (nginx proxy, relay, forwarders) on CPU 1, the same split
    in every phase."""
    if not PIN or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def start(stack: ExitStack, command: list[str], port: int, log: Path, env: dict | None = None,
          cpu: int = 1) -> subprocess.Popen:
    command = pinned(command, cpu)
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
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
                cpu: int) -> None:
    conf = (HERE / "nginx.conf.template").read_text().format(
        role=role, workdir=workdir, port=port, upstream_port=upstream_port, body=body)
    path = workdir / f"{role}.conf"
    path.write_text(conf)
    start(stack, [nginx_binary(), "-c", str(path), "-e", str(workdir / f"{role}-error.log")],
          port, workdir / f"{role}.log", cpu=cpu)


def presigned(path: Path, count: int, tag: str) -> Path:
    """``count`` distinct signed requests, "<ts>\\t<signature>\\t<body>" per line."""
    ts = int(time.time())
    with open(path, "w") as out:
        for i in range(count):
            body = json.dumps({
                "recipient": RECIPIENTS[i % len(RECIPIENTS)],
                "text": f"Your verification code is {i % 1_000_000:06d}",
                "message_type": "otp_verify", "delivery_method": "text",
                "code": f"{i % 1_000_000:06d}", "locale": f"en-{tag}{i}",
            }, separators=(",", ":"))
            out.write(f"{ts}\t{sign(SIGNING_KEY, ts, body.encode())}\t{body}\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(name: str, url: str, requests_file: Path, duration: int, connections: int, pause_ms: int = 0,
        server_pid: int | None = None) -> Result:
    command = pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
               "-s", str(HERE / "post.lua"), url, "--", str(requests_file), str(pause_ms)], 0)
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    output = subprocess.run(command, capture_output=True, text=True, check=True,
                            timeout=duration + 60).stdout
    data = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    cpu_us = None
    if server_pid and data["requests"]:
        cpu_us = (cpu_seconds(server_pid) - cpu_before) / data["requests"] * 1e6
    return Result(name, data["requests"], data["duration_us"] / 1e6,
                  data["non2xx"] + data["socket_errors"], data["p50_us"] / 1000, data["p99_us"] / 1000, cpu_us)


def memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def show(result: Result) -> None:
    cpu = (f"   {result.cpu_us_per_request:5.0f} us CPU/req (= {1e6 / result.cpu_us_per_request:,.0f} req/s per core)"
           if result.cpu_us_per_request else "")
    print(f"  {result.name:<34} {result.accepted_per_second:>9,.0f} req/s   p50 {result.p50_ms:6.2f} ms"
          f"   p99 {result.p99_ms:6.2f} ms   failed {result.failed}{cpu}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent requests (default 32)")
    parser.add_argument("--paced-rate", type=int, default=1800, help="target req/s of paced runs")
    parser.add_argument("--pin", action="store_true",
                        help="pin load side to CPU 0 and the server under test to CPU 1 (only on an idle machine)")
    parser.add_argument("--skip-client-choice", action="store_true", help="skip the bare forwarders")
    args = parser.parse_args()
    global PIN
    PIN = args.pin
    need_tools()
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        up_port, proxy_port, relay_port, admin_port = free_port(), free_port(), free_port(), free_port()
        start_nginx(stack, workdir, "upstream", up_port, up_port,
                    f"location {PATH} {{ default_type application/json; return 200 '{CANNED}'; }}", cpu=0)
        start_nginx(stack, workdir, "proxy", proxy_port, up_port,
                    "location / { proxy_pass http://sms; proxy_http_version 1.1; "
                    "proxy_set_header Connection \"\"; }", cpu=1)
        (workdir / "apikey").write_text("bench-api-key\n")
        (workdir / "signing").write_text(SIGNING_KEY + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_RELAY_")}
        env.update({
            "OTP_RELAY_LISTEN": f"127.0.0.1:{relay_port}",
            "OTP_RELAY_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
            "OTP_RELAY_SMS_BASE_URL": f"http://127.0.0.1:{up_port}", "OTP_RELAY_INSECURE_UPSTREAM": "true",
            "OTP_RELAY_SUBACCOUNT": SUBACCOUNT,
            "OTP_RELAY_API_KEY_FILE": str(workdir / "apikey"),
            "OTP_RELAY_SIGNING_KEY_FILE": str(workdir / "signing"),
            "OTP_RELAY_GLOBAL_LIMIT": "1000000/s", "OTP_RELAY_PER_RECIPIENT": "1000000/s",
        })
        relay_bin = Path(sys.executable).with_name("otp-relay")
        relay = start(stack, [str(relay_bin)], relay_port, workdir / "relay.log", env)
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).read()
        rss_idle, _ = memory_mb(relay.pid)

        d, c = args.duration, args.connections
        direct_url = f"http://127.0.0.1:{up_port}{PATH}"
        proxy_url = f"http://127.0.0.1:{proxy_port}{PATH}"
        relay_url = f"http://127.0.0.1:{relay_port}/v1/messages"
        filler = presigned(workdir / "filler.tsv", 1000, "f")

        print(f"saturation: 1 wrk thread, {c} connections, {d}s each "
              + (f"(load generator + canned upstream on CPU 0, server under test on CPU 1 of {os.cpu_count()})"
                 if PIN else f"({os.cpu_count()} cores shared by wrk, nginx and the server under test)"))
        sat = [wrk("(a) upstream directly", direct_url, filler, d, c),
               wrk("(b) nginx proxy_pass", proxy_url, filler, d, c)]
        for r in sat:
            show(r)
        sat.append(wrk("(c) otp-relay", relay_url, presigned(workdir / "sat.tsv", 16000 * d, "s"), d, c,
                       server_pid=relay.pid))
        show(sat[2])

        paced_connections = max(1, round(args.paced_rate / 100))  # each: one request per ~10 ms
        pause = round(paced_connections * 1000 / args.paced_rate)
        print(f"paced: {paced_connections} connections, {pause} ms pause each (~{args.paced_rate} req/s)")
        paced = [wrk("(a) upstream directly", direct_url, filler, d, paced_connections, pause),
                 wrk("(b) nginx proxy_pass", proxy_url, filler, d, paced_connections, pause),
                 wrk("(c) otp-relay", relay_url, presigned(workdir / "paced.tsv", 3 * args.paced_rate * d // 2, "p"),
                     d, paced_connections, pause)]
        for r in paced:
            show(r)
        rss_now, rss_peak = memory_mb(relay.pid)

        choice: list[Result] = []
        if not args.skip_client_choice:
            print(f"library choice: bare forwarders (no checks), {c} connections, {max(3, d // 2)}s each")
            for server, client in (("aiohttp", "aiohttp"), ("starlette", "aiohttp"), ("aiohttp", "httpx")):
                port = free_port()
                with ExitStack() as fstack:
                    forwarder = start(fstack, [sys.executable, str(HERE / "forwarder.py"), str(port), direct_url,
                                               client, server], port, workdir / f"forwarder-{server}-{client}.log")
                    result = wrk(f"{server} server, {client} client", f"http://127.0.0.1:{port}/v1/messages",
                                 filler, max(3, d // 2), c, server_pid=forwarder.pid)
                show(result)
                choice.append(result)

    direct, nginx, relay_sat = sat
    p_direct, p_nginx, p_relay = paced
    added_p50 = p_relay.p50_ms - p_direct.p50_ms
    added_p99 = p_relay.p99_ms - p_direct.p99_ms
    print("\nsummary (load average now: %.1f %.1f %.1f; figures scale with what else runs)" % os.getloadavg())
    print(f"  relay / nginx throughput:            {relay_sat.accepted_per_second / nginx.accepted_per_second:6.3f}")
    print(f"  relay / direct throughput:           {relay_sat.accepted_per_second / direct.accepted_per_second:6.3f}")
    print(f"  relay overhead over direct @~{p_relay.accepted_per_second:,.0f} req/s: "
          f"p50 +{added_p50:.2f} ms, p99 +{added_p99:.2f} ms (nginx: p99 +{p_nginx.p99_ms - p_direct.p99_ms:.2f} ms)")
    print(f"  relay resident memory:               idle {rss_idle:.1f} MB, after the runs {rss_now:.1f} MB,"
          f" peak {rss_peak:.1f} MB")
    if choice:
        bare = choice[0].accepted_per_second
        print(f"  relay / bare aiohttp forwarder:      {relay_sat.accepted_per_second / bare:6.3f}  (cost of the checks)")
        print(f"  aiohttp / Starlette+uvicorn server:  {bare / max(choice[1].accepted_per_second, 1):6.2f}x")
        print(f"  aiohttp client / httpx client:       {bare / max(choice[2].accepted_per_second, 1):6.1f}x")
    if relay_sat.cpu_us_per_request:
        print(f"  relay CPU per accepted request:      {relay_sat.cpu_us_per_request:.0f} us"
              f" -> one process given a whole core: ~{1e6 / relay_sat.cpu_us_per_request:,.0f} req/s")
    checks = [
        ("one relay process >= 3,600 accepted req/s (measured)", relay_sat.accepted_per_second >= 3600),
        ("p99 added latency <= 5 ms at ~1,800 req/s", added_p99 <= 5),
        ("resident memory <= 80 MB", rss_peak <= 80),
        ("no failed relay requests", relay_sat.failed == 0 and p_relay.failed == 0),
    ]
    for label, ok in checks:
        print(f"  target {'met   ' if ok else 'MISSED'} {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
