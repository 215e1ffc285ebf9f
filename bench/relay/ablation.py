"""Where the relay's CPU per request goes, by taking parts away (prints figures; not a test).

    .venv/bin/python bench/relay/ablation.py [--rounds 4] [--duration 8]

Runs, alternating round by round so slow drifts of a shared machine hit every row alike, under
the same wrk load as bench/relay/run.py (32 connections, distinct signed requests, the canned
nginx upstream):
  * the relay as shipped;
  * the relay with every check stubbed (admission, idempotency and limits, receipts, log line,
    metrics, connection guard): what is left is its server, its 8x8 client and the answer;
  * the relay process with its send handler replaced by a bare forward through its own client;
  * bare forwarders (bench/relay/forwarder.py): pyreqwest on aiohttp's, uvicorn's and granian's
    servers.
With ``--each``: the relay as shipped and with one part stubbed at a time. Prints CPU µs per
accepted request for every round and the lowest of each row. The gap between
the shipped relay and its stubbed twin is what the relay's own work costs; the bare rows are the
floor any relay on that server and client pays before doing anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

PARTS = ("admission", "state", "receipts", "log", "metrics", "guard")
STUBBED = ",".join(PARTS)
ROWS = {
    "relay as shipped": ("relay", ""),
    "relay, every check stubbed": ("relay", STUBBED),
    "relay process, bare forward handler": ("relay", "bare"),
    "bare: aiohttp server + pyreqwest": ("forwarder", "aiohttp"),
    "bare: uvicorn server + pyreqwest": ("forwarder", "uvicorn"),
    "bare: granian server + pyreqwest": ("forwarder", "granian"),
}


def stub(parts: set[str]) -> None:
    """Replace the named parts of the relay (in this process) before it starts."""
    import dataclasses  # noqa: PLC0415
    import itertools  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415
    from otp_relay import app, connections, messages, metrics, receipts, state  # noqa: PLC0415

    fixed = messages.parse(b'{"recipient":"+6591000001","text":"Your code is 123456",'
                           b'"message_type":"otp_verify","delivery_method":"text"}')
    assert isinstance(fixed, messages.OtpRequest)
    numbers = itertools.count()
    if "admission" in parts:
        async def admit(self, request, fields):  # noqa: ANN001, ANN202
            await request.read()
            fields["authenticated"] = True
            return dataclasses.replace(fixed, idempotency_key=f"{next(numbers):064x}")
        app.Relay._admit = admit
    if "state" in parts:
        async def claim(self, key, recipient, request_id):  # noqa: ANN001, ANN202
            return state.Proceed()

        async def settle(self, key, outcome, umid=""):  # noqa: ANN001, ANN202
            return None
        state.MemoryState.claim, state.MemoryState.settle = claim, settle
    if "receipts" in parts:
        receipts.Receipts.sent = lambda self, umid: None
        receipts.Receipts.callback_url = lambda self: None
    if "log" in parts:
        app.Relay._log = lambda self, fields: None
    if "metrics" in parts:
        metrics.RelayMetrics.outcome = lambda self, name: None
        metrics.RelayMetrics.upstream = lambda self, status, seconds: None
    if "guard" in parts:
        connections.ConnectionGuard.wrap = lambda self, factory: factory
    if "bare" in parts:
        async def send(self, request):  # noqa: ANN001, ANN202
            # keeps the connection guard's bookkeeping (else it drops the connection as one whose
            # headers never finished, header_timeout after its first request)
            self.guard.request_started(request.transport)
            await request.read()
            self.guard.body_received(request.transport)
            await self.upstream.send("bench-api-key", {"destination": fixed.recipient, "text": fixed.text})
            self.guard.request_finished(request.transport)
            return web.Response(status=202, body=b'{"id":"x"}', content_type="application/json")
        app.Relay.send = send


def serve_stubbed() -> int:
    """The child process of a relay row: stub what ABLATION_STUBS names, then run the relay."""
    sys.path.insert(0, str(HERE.parent.parent / "relay"))
    stub(set(filter(None, os.environ.get("ABLATION_STUBS", "").split(","))))
    from otp_relay import cli  # noqa: PLC0415

    return cli.main([])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=8, help="seconds per row and round")
    parser.add_argument("--each", action="store_true",
                        help="instead of the rows above: the relay as shipped and with one part stubbed at a time")
    args = parser.parse_args()
    bench.need_tools()
    rows = ({"relay as shipped": ("relay", ""), **{f"relay, {part} stubbed": ("relay", part) for part in PARTS}}
            if args.each else ROWS)
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        up_port = bench.start_upstream(stack, workdir)
        upstream = f"http://127.0.0.1:{up_port}"
        print(bench.HEADER)
        for round_no in range(args.rounds):
            for index, (name, (kind, detail)) in enumerate(rows.items()):
                port, admin_port = bench.free_port(), bench.free_port()
                with ExitStack() as row_stack:
                    if kind == "forwarder":
                        command = [sys.executable, str(HERE / "forwarder.py"), str(port), upstream + bench.PATH,
                                   "pyreqwest", detail]
                        process = bench.start(row_stack, command, port, workdir / "forwarder.log")
                    else:
                        env = bench.relay_env(workdir, port, admin_port, upstream)
                        env["ABLATION_STUBS"] = detail
                        process = bench.start(row_stack, [sys.executable, __file__, "--serve"], port,
                                              workdir / "relay.log", env)
                        bench.wait_ready(admin_port)
                    requests = bench.presigned(workdir / "load.tsv", 16000 * args.duration, f"b{round_no}x{index}")
                    result = bench.wrk(f"{name} (round {round_no + 1})", f"http://127.0.0.1:{port}/v1/messages",
                                       requests, args.duration, 32, server=process)
                    if result.cpu_us:
                        cpu[name].append(result.cpu_us)
    print(f"\nCPU µs per accepted request, round by round (load average now {os.getloadavg()[0]:.1f}):")
    for name, values in cpu.items():
        print(f"  {name:<40} " + " ".join(f"{v:5.0f}" for v in values) + f"   lowest {min(values, default=0):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(serve_stubbed() if sys.argv[1:] == ["--serve"] else main())
