"""The relay's own CPU per accepted send, in process (prints figures; not a test).

    .venv/bin/python bench/relay/pipeline_cpu.py [--requests 3000] [--batches 8]

Runs ``SendPipeline.handle`` of a relay built with the bench's settings (bench/relay/run.py's
``relay_env``) on distinct signed requests made in memory, with the 8x8 client's ``send``
replaced by an immediate acceptance (its metrics callback still runs), after what a serving relay
does first (``cli.settle_memory``): every check, the state, receipts, metrics and the log line
are in; aiohttp's server, the network and pyreqwest are not.
Prints process CPU µs per send for each batch and the lowest. One thread and no I/O, so the
lowest batch moves far less with a shared machine's load than the wrk rows of run.py and
ablation.py: the figure to compare a change of the relay's own code with. Also prints the share
of it the garbage collector took.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # noqa: E402

UMID = "0b5e4b4c-1f0e-4c4f-9f43-3c2a4b8a9f10"


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False


class _Protocol:
    """What aiohttp's request and body reader ask of the connection's protocol."""

    transport = _Transport()
    writer = None
    ssl_context = None
    peername = ("127.0.0.1", 40000)
    sockname = ("127.0.0.1", 8080)
    _reading_paused = False

    def pause_reading(self, **_: Any) -> None: ...

    def resume_reading(self, **_: Any) -> None: ...


async def measure(requests: int, batches: int) -> tuple[list[float], float]:
    from aiohttp import streams, web  # noqa: PLC0415
    from aiohttp.http import HttpVersion, RawRequestMessage  # noqa: PLC0415
    from multidict import CIMultiDict, CIMultiDictProxy  # noqa: PLC0415
    from yarl import URL  # noqa: PLC0415

    from otp_relay import cli, config, logs  # noqa: PLC0415
    from otp_relay.app import Relay  # noqa: PLC0415
    from otp_relay.signing import sign  # noqa: PLC0415
    from otp_relay.upstream import Accepted  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="pipeline-cpu-"))
    (workdir / "apikey").write_text("bench-api-key\n")
    (workdir / "signing").write_text(bench.SIGNING_KEY + "\n")
    settings = config.load([], bench.relay_env(workdir, 1, 2, "http://127.0.0.1:9"))
    logs.configure("INFO", open(os.devnull, "w"))  # noqa: SIM115  the log line is built and written
    relay = Relay(settings)
    await relay.refresh()
    settle = getattr(cli, "settle_memory", None)  # what a serving relay does first (absent before 2026-12-08)
    if settle is not None:
        settle()

    async def accepted(api_key: str, payload: dict[str, Any], deadline: float | None = None) -> tuple[Accepted, int]:
        relay.upstream._observe("200", 0.001)
        return Accepted(UMID), 1

    relay.upstream.send = accepted  # type: ignore[method-assign]
    loop, protocol = asyncio.get_running_loop(), _Protocol()

    def request(number: int) -> web.Request:
        code, timestamp = f"{number % 1_000_000:06d}", int(time.time())
        body = json.dumps({"recipient": bench.RECIPIENTS[number % len(bench.RECIPIENTS)],
                           "text": f"Your {number} code is {code}", "message_type": "otp_verify",
                           "delivery_method": "text", "code": code, "locale": "en"},
                          separators=(",", ":")).encode()
        payload = streams.StreamReader(protocol, 2**16, loop=loop)  # type: ignore[arg-type]
        payload.feed_data(body)
        payload.feed_eof()
        headers = CIMultiDictProxy(CIMultiDict({
            "Content-Type": "application/json", "Content-Length": str(len(body)),
            "X-Otp-Timestamp": str(timestamp), "X-Otp-Signature": sign(bench.SIGNING_KEY, timestamp, body)}))
        message = RawRequestMessage("POST", "/v1/messages", HttpVersion(1, 1), headers, (), False, None,
                                    False, False, URL("/v1/messages"))
        return web.Request(message, payload, protocol, None, None, loop, client_max_size=16384)  # type: ignore[arg-type]

    collecting = [0.0, 0.0]  # start of the running collection, seconds in collections

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.process_time()
        else:
            collecting[1] += time.process_time() - collecting[0]

    per_send, made, spent = [], 0, 0.0
    gc.callbacks.append(timed)
    try:
        for _ in range(batches):
            batch = [request(made + i) for i in range(requests)]
            made += requests
            collecting[1], started = 0.0, time.process_time()
            for each in batch:
                response = await relay.pipeline.handle(each)
                assert response.status == 202, response.body
            elapsed = time.process_time() - started
            per_send.append(elapsed / requests * 1e6)
            spent += collecting[1] / elapsed
    finally:
        gc.callbacks.remove(timed)
    return per_send, spent / batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="sends per batch")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    per_send, collector = asyncio.run(measure(args.requests, args.batches))
    print("SendPipeline.handle, CPU µs per accepted send by batch: "
          + " ".join(f"{value:.1f}" for value in per_send))
    print(f"lowest {min(per_send):.1f} µs; garbage collector {100 * collector:.0f}% of the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
