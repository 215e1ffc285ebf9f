"""The relay under slow clients, and the CPU cost of shared (Redis) state. Loopback only,
bounded in count and time.

    .venv/bin/python bench/relay/slowloris.py [--slow 10000] [--requests 2000]

Prints:
1. the relay's RSS with ``--slow`` idle slow connections open (each sent half a request's
   headers and then nothing), with the default connection cap (1,000: the oldest idle or slow
   connections are evicted) and without a useful cap (all of them held);
2. how long signed requests take while those connections are open;
3. CPU microseconds per accepted request with in-process state and with Redis state (relay
   process, and Redis's own CPU beside it).
The upstream is a canned 8x8 answer from a small aiohttp server (plain http, with the relay's
--insecure-upstream flag). Needs ``redis-server`` (``make redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import phonenumbers

from otp_relay.signing import sign
from otp_sandbox.processes import free_port

SIGNING_KEY = "bench-signing-key"
UPSTREAM = """
import sys
from aiohttp import web
async def send(request):
    await request.read()
    return web.json_response({"umid": "bench-umid", "status": {"code": "QUEUED"}})
app = web.Application()
app.router.add_post("/api/v1/subaccounts/{sub}/messages", send)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_http(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def spawn(stack: ExitStack, command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    return process


class Relay:
    def __init__(self, stack: ExitStack, workdir: Path, upstream_port: int, **settings: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        (workdir / "apikey").write_text("bench-api-key\n")
        (workdir / "signing").write_text(SIGNING_KEY + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_RELAY_")}
        env.update({
            "OTP_RELAY_LISTEN": f"127.0.0.1:{self.port}", "OTP_RELAY_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            "OTP_RELAY_SMS_BASE_URL": f"http://127.0.0.1:{upstream_port}", "OTP_RELAY_INSECURE_UPSTREAM": "true",
            "OTP_RELAY_SUBACCOUNT": "bench_sub", "OTP_RELAY_API_KEY_FILE": str(workdir / "apikey"),
            "OTP_RELAY_SIGNING_KEY_FILE": str(workdir / "signing"), "OTP_RELAY_LOG_LEVEL": "WARNING",
            "OTP_RELAY_GLOBAL_LIMIT": "1000000/s", "OTP_RELAY_MAX_IDEMPOTENCY_KEYS": "4000000000",
        "OTP_RELAY_PER_PREFIX": "1000000/s", "OTP_RELAY_COUNTRY_HOUR": "4000000000/1h",
        "OTP_RELAY_COUNTRY_DAY": "4000000000/24h", "OTP_RELAY_PER_RECIPIENT": "1000000/s",
        })
        env.update({f"OTP_RELAY_{k.upper()}": v for k, v in settings.items()})
        self.process = spawn(stack, [str(Path(sys.executable).with_name("otp-relay"))],
                             workdir / f"relay-{self.port}.log", env)
        wait_http(f"http://127.0.0.1:{self.admin_port}/readyz")
        self.url = f"http://127.0.0.1:{self.port}/v1/messages"


_numbers = itertools.count(10_000_000)


def signed_request() -> tuple[bytes, dict[str, str]]:
    while True:
        number = f"+659{next(_numbers) % 10_000_000:07d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            break
    body = json.dumps({"recipient": number, "text": "Your code is 123456", "message_type": "otp_verify",
                       "delivery_method": "text", "code": "123456"}).encode()
    ts = int(time.time())
    return body, {"Content-Type": "application/json", "X-Otp-Timestamp": str(ts),
                  "X-Otp-Signature": sign(SIGNING_KEY, ts, body)}


async def timed_requests(url: str, count: int) -> list[float]:
    """Sequential signed requests on fresh connections; seconds each (all must be 202)."""
    seconds = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(count):
            body, headers = signed_request()
            started = time.monotonic()
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=30)) as response:
                await response.read()
                if response.status != 202:
                    raise RuntimeError(f"legitimate request answered {response.status}")
            seconds.append(time.monotonic() - started)
    return seconds


async def load(url: str, count: int, concurrency: int) -> float:
    """``count`` distinct signed requests over ``concurrency`` keep-alive connections; wall seconds."""
    requests = [signed_request() for _ in range(count)]
    queue = iter(requests)
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker() -> None:
            for body, headers in queue:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"answered {response.status}")
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


def open_slow(port: int, count: int, deadline: float) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nX-Otp-Timestamp: 1")
        except OSError:
            break
        sockets.append(sock)
    return sockets


def slow_clients_case(stack: ExitStack, workdir: Path, upstream_port: int, slow: int, label: str,
                      **settings: str) -> None:
    relay = Relay(stack, workdir, upstream_port, HEADER_TIMEOUT="120", **settings)
    asyncio.run(timed_requests(relay.url, 20))  # warm up
    before = rss_mib(relay.process.pid)
    started = time.monotonic()
    sockets = open_slow(relay.port, slow, started + 120)
    opened = time.monotonic() - started
    try:
        time.sleep(1.0)
        held = rss_mib(relay.process.pid)
        seconds = asyncio.run(timed_requests(relay.url, 50))
        print(f"{label}: {len(sockets)} slow connections opened in {opened:.1f}s; relay RSS "
              f"{before:.1f} MiB before, {held:.1f} MiB with them open (+{held - before:.1f}); "
              f"50 signed requests meanwhile: p50 {statistics.median(seconds) * 1000:.1f} ms, "
              f"max {max(seconds) * 1000:.1f} ms, all 202")
    finally:
        for sock in sockets:
            sock.close()


def cpu_case(stack: ExitStack, workdir: Path, upstream_port: int, requests: int, label: str,
             redis_pid: int | None = None, **settings: str) -> tuple[float, float]:
    relay = Relay(stack, workdir, upstream_port, **settings)
    asyncio.run(load(relay.url, 200, 16))  # warm up
    relay_cpu = cpu_seconds(relay.process.pid)
    redis_cpu = cpu_seconds(redis_pid) if redis_pid else 0.0
    wall = asyncio.run(load(relay.url, requests, 16))
    relay_us = (cpu_seconds(relay.process.pid) - relay_cpu) / requests * 1e6
    redis_us = (cpu_seconds(redis_pid) - redis_cpu) / requests * 1e6 if redis_pid else 0.0
    print(f"{label}: {requests} accepted in {wall:.1f}s ({requests / wall:.0f}/s), relay CPU "
          f"{relay_us:.0f} us/request" + (f", redis-server CPU {redis_us:.0f} us/request" if redis_pid else ""))
    return relay_us, redis_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=int, default=10_000, help="slow connections to open (default 10000)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per CPU case (default 2000)")
    args = parser.parse_args()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("redis-server not found: run 'make redis'")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, args.slow * 2 + 1024)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # inherited by the relay too
    if wanted < args.slow + 1024:
        print(f"note: open files limited to {wanted}; fewer slow connections will be held")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (figures are noisy when busy)")
    with tempfile.TemporaryDirectory(prefix="bench-slowloris-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        upstream_port, redis_port = free_port(), free_port()
        spawn(stack, [sys.executable, "-c", UPSTREAM, str(upstream_port)], workdir / "upstream.log")
        (workdir / "redis.conf").write_text(
            f"port {redis_port}\nbind 127.0.0.1\ndir {workdir}\nsave \"\"\nappendonly no\n"
            "maxmemory 256mb\nmaxmemory-policy noeviction\n")
        redis = spawn(stack, [redis_server, str(workdir / "redis.conf")], workdir / "redis.log")
        time.sleep(0.5)

        with ExitStack() as case:
            slow_clients_case(case, workdir, upstream_port, args.slow, "default cap (1000 connections)")
        with ExitStack() as case:
            slow_clients_case(case, workdir, upstream_port, args.slow, "no useful cap (20000 connections)",
                              MAX_CONNECTIONS="20000")
        with ExitStack() as case:
            memory, _ = cpu_case(case, workdir, upstream_port, args.requests, "in-process state")
        with ExitStack() as case:
            shared, redis_us = cpu_case(case, workdir, upstream_port, args.requests, "Redis state",
                                        redis_pid=redis.pid, STATE_URL=f"redis://127.0.0.1:{redis_port}/0")
        print(f"Redis state costs the relay {shared - memory:+.0f} us/request "
              f"({shared / memory:.2f}x), plus {redis_us:.0f} us/request in redis-server")


if __name__ == "__main__":
    main()
