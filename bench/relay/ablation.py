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
With ``--against TREE``: also the relay as shipped from another source tree (TREE/relay), for a
before/after in one run. With ``--each``: the relay as shipped, with one part stubbed at a time,
and with conversion tracking switched on (its rule off: ``NoRule``; the shipped default has
tracking off). Prints CPU µs per accepted request for every round and the lowest of each row,
and the idle RSS of one ``otp-relay`` process started with the defaults (before the rows, before
any request). The gap between the shipped relay and its stubbed twin is what the relay's own
work costs; the bare rows are the floor any relay on that server and client pays before doing
anything.

The stubs replace methods of the relay's classes (``pipeline.SendPipeline.admit``, ``._log``,
``.handle``, ``state.MemoryState.claim``/``settle``, ...). Each target is checked before anything
runs: one that no longer exists, or whose parameters changed, raises ``StaleTarget`` (a patched
name nothing calls would silently measure the unstubbed relay under the stub's label).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

PARTS = ("admission", "state", "receipts", "log", "metrics", "guard")
STUBBED = ",".join(PARTS)
BARE = "bare"
CONVERSION = "conversion"  # not a stub: conversion tracking switched on (its rule off, NoRule)
ROWS = {
    "relay as shipped": ("relay", ""),
    "relay, every check stubbed": ("relay", STUBBED),
    "relay process, bare forward handler": ("relay", BARE),
    "bare: aiohttp server + pyreqwest": ("forwarder", "aiohttp"),
    "bare: uvicorn server + pyreqwest": ("forwarder", "uvicorn"),
    "bare: granian server + pyreqwest": ("forwarder", "granian"),
}


class StaleTarget(RuntimeError):
    """A part the ablation stubs is no longer where it looks: the relay changed shape."""


def _replace(owner: type, name: str, stub: Callable[..., Any], apply: bool) -> None:
    """Put ``stub`` in place of the method ``owner.name``. Raises ``StaleTarget`` when the relay
    has no such method, or (for a stub that names its parameters) when its parameters differ:
    patching a name nothing calls any more would measure the unstubbed relay under the stub's
    label, with nothing to show it."""
    where = f"{owner.__module__}.{owner.__qualname__}.{name}"
    original = inspect.getattr_static(owner, name, None)
    if original is None or not callable(original):
        raise StaleTarget(f"{where} does not exist (any more): update bench/relay/ablation.py's stubs "
                          "to the relay's current structure")
    stub_parameters = inspect.signature(stub).parameters
    if not any(p.kind is p.VAR_POSITIONAL for p in stub_parameters.values()):
        expected = list(inspect.signature(original).parameters)
        if list(stub_parameters) != expected:
            raise StaleTarget(f"{where} takes ({', '.join(expected)}), the ablation's stub "
                              f"({', '.join(stub_parameters)}): update bench/relay/ablation.py")
    if apply:
        setattr(owner, name, stub)


def stub(parts: set[str], apply: bool = True) -> None:
    """Replace the named parts of the relay (in this process) before it starts; with
    ``apply=False`` only check that every target is still there (raises ``StaleTarget``)."""
    import dataclasses  # noqa: PLC0415
    import itertools  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415
    from otp_relay import connections, messages, metrics, pipeline, receipts, state  # noqa: PLC0415

    unknown = parts - set(PARTS) - {BARE, CONVERSION}
    if unknown:
        raise StaleTarget(f"no such part to stub: {', '.join(sorted(unknown))}")
    fixed = messages.parse(b'{"recipient":"+6591000001","text":"Your code is 123456",'
                           b'"message_type":"otp_verify","delivery_method":"text"}')
    assert isinstance(fixed, messages.OtpRequest)
    numbers = itertools.count()
    if "admission" in parts:  # readiness, signature, in-flight cap, JSON, policy; the body is still read
        async def admit(self, request, entry):  # noqa: ANN001, ANN202
            await self.intake.read(request)
            entry.authenticated, entry.channel = True, fixed.delivery
            return dataclasses.replace(fixed, idempotency_key=f"{next(numbers):064x}")
        _replace(pipeline.SendPipeline, "admit", admit, apply)
    if "state" in parts:
        async def claim(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            return state.Proceed()

        async def settle(self, key, outcome, umid=""):  # noqa: ANN001, ANN202
            return None
        _replace(state.MemoryState, "claim", claim, apply)
        _replace(state.MemoryState, "settle", settle, apply)
    if "receipts" in parts:
        _replace(receipts.Receipts, "sent", lambda self, umid, country, channel="text": None, apply)
        _replace(receipts.Receipts, "callback_url", lambda self: None, apply)
    if "log" in parts:
        _replace(pipeline.SendPipeline, "_log", lambda self, entry: None, apply)
    if "metrics" in parts:
        def observer(self, channel):  # noqa: ANN001, ANN202
            return lambda status, seconds: None
        _replace(metrics.RelayMetrics, "outcome", lambda self, name, channel=None: None, apply)
        _replace(metrics.RelayMetrics, "upstream_observer", observer, apply)
    if "guard" in parts:
        _replace(connections.ConnectionGuard, "wrap", lambda self, factory: factory, apply)
    if BARE in parts:
        async def handle(self, request):  # noqa: ANN001, ANN202
            # keeps the connection guard's bookkeeping (else it drops the connection as one whose
            # headers never finished, header_timeout after its first request)
            guard = self.intake.guard
            guard.request_started(request.transport)
            await request.read()
            guard.body_received(request.transport)
            await self.upstream.send("bench-api-key", {"destination": fixed.recipient, "text": fixed.text})
            guard.request_finished(request.transport)
            return web.Response(status=202, body=b'{"id":"x"}', content_type="application/json")
        _replace(pipeline.SendPipeline, "handle", handle, apply)
        built_with = inspect.signature(pipeline.SendPipeline.__init__).parameters
        if not {"intake", "upstream"} <= set(built_with):
            raise StaleTarget("SendPipeline is no longer built with an intake and an upstream "
                              "(the bare handler uses self.intake.guard and self.upstream)")


def serve_stubbed() -> int:
    """The child process of a relay row: stub what ABLATION_STUBS names, then run the relay."""
    sys.path.insert(0, str(HERE.parent.parent / "relay"))
    stub(set(filter(None, os.environ.get("ABLATION_STUBS", "").split(","))))  # raises before serving
    from otp_relay import cli  # noqa: PLC0415

    return cli.main([])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=8, help="seconds per row and round")
    parser.add_argument("--each", action="store_true",
                        help="instead of the rows above: the relay as shipped and with one part stubbed at a time")
    parser.add_argument("--against", type=Path, metavar="TREE",
                        help="also a row of the relay as shipped from another source tree (TREE/relay, e.g. a "
                             "worktree of main): a before/after in the same run")
    args = parser.parse_args()
    bench.need_tools()
    stub(set(PARTS) | {BARE, CONVERSION}, apply=False)  # a stale target stops the run before any row
    rows = ({"relay as shipped": ("relay", ""), **{f"relay, {part} stubbed": ("relay", part) for part in PARTS},
             "relay, conversion tracking on (rule off)": ("relay", CONVERSION)}
            if args.each else dict(ROWS))
    if args.against:
        if not (args.against / "relay" / "otp_relay").is_dir():
            parser.error(f"--against: no relay/otp_relay under {args.against}")
        rows[f"relay as shipped, {args.against.name}"] = ("against", str(args.against.resolve() / "relay"))
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        up_port = bench.start_upstream(stack, workdir)
        upstream = f"http://127.0.0.1:{up_port}"
        idle = bench.idle_rss_mb(workdir, upstream)
        print(bench.HEADER)
        for round_no in range(args.rounds):
            for index, (name, (kind, detail)) in enumerate(rows.items()):
                port, admin_port = bench.free_port(), bench.free_port()
                with ExitStack() as row_stack:
                    if kind == "forwarder":
                        command = [sys.executable, str(HERE / "forwarder.py"), str(port), upstream + bench.PATH,
                                   "pyreqwest", detail]
                        process = bench.start(row_stack, command, port, workdir / "forwarder.log")
                    elif kind == "against":
                        env = {**bench.relay_env(workdir, port, admin_port, upstream), "PYTHONPATH": detail}
                        process = bench.start(row_stack, [sys.executable, "-m", "otp_relay"], port,
                                              workdir / "against.log", env)
                        bench.wait_ready(admin_port)
                    else:
                        env = bench.relay_env(workdir, port, admin_port, upstream)
                        env["ABLATION_STUBS"] = detail
                        if CONVERSION in detail.split(","):
                            (workdir / "logtokens").write_text("bench-log-token\n")
                            env.update(OTP_RELAY_CONVERSION="true",
                                       OTP_RELAY_LOG_TOKEN_FILE=str(workdir / "logtokens"))
                        process = bench.start(row_stack, [sys.executable, __file__, "--serve"], port,
                                              workdir / "relay.log", env)
                        bench.wait_ready(admin_port)
                    requests = bench.presigned(workdir / "load.tsv", 16000 * args.duration, f"b{round_no}x{index}")
                    result = bench.wrk(f"{name} (round {round_no + 1})", f"http://127.0.0.1:{port}/v1/messages",
                                       requests, args.duration, 32, server=process)
                    if result.failed:
                        print(f"  warning: {result.failed} requests of {name!r} failed", file=sys.stderr)
                    if result.cpu_us:
                        cpu[name].append(result.cpu_us)
    print(f"\nCPU µs per accepted request, round by round (load average now {os.getloadavg()[0]:.1f}):")
    for name, values in cpu.items():
        print(f"  {name:<44} " + " ".join(f"{v:5.0f}" for v in values) + f"   lowest {min(values, default=0):.0f}")
    print(f"  idle RSS of one otp-relay process (defaults, before any request): {idle:.1f} MB")
    shipped = min(cpu["relay as shipped"], default=0)
    for name, values in cpu.items():
        if name != "relay as shipped" and values and shipped:
            print(f"  relay as shipped / {name}: {shipped / min(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(serve_stubbed() if sys.argv[1:] == ["--serve"] else main())
