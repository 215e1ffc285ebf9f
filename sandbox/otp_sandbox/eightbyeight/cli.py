"""``otp-sandbox sms-emulator``: run the 8x8 emulator as its own process."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import ssl
import sys
from pathlib import Path

from ..pki import CertificateAuthority


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sms-emulator", help="run the 8x8 SMS and Voice API emulator (HTTPS on loopback)"
    )
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0),
                        help="HOST:PORT to listen on (port 0 picks a free one; default 127.0.0.1:0)")
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="directory for the emulator's certificate and files")
    parser.add_argument("--ca-dir", type=Path, default=None,
                        help="sandbox CA directory (default: STATE_DIR/ca)")
    parser.add_argument("--receipt-network", action="append", default=[], metavar="CIDR",
                        type=ipaddress.ip_network,
                        help="also post delivery receipts and voice webhooks to this network (default: loopback only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    from . import server  # noqa: PLC0415  (keeps `otp-sandbox --help` fast)
    from .receipts import Dispatcher  # noqa: PLC0415

    ca = CertificateAuthority(args.ca_dir or state_dir / "ca")
    host, port = args.listen
    # Valid for the address it listens on too (e.g. the sandbox node's bridge, for relay pods).
    pair = ca.issue(f"sms-emulator-{os.getpid()}", hosts=tuple(dict.fromkeys(("localhost", "127.0.0.1", "::1", host))))

    def announce(url: str) -> None:
        print(json.dumps({"url": url, "admin_url": f"{url}/__sandbox", "ca": str(ca.cert_path),
                          "pid": os.getpid()}), flush=True)

    async def main() -> None:
        receipts = Dispatcher(ssl.create_default_context(cafile=str(ca.cert_path)),
                              allowed_networks=args.receipt_network)
        task = asyncio.ensure_future(server.serve(host, port, str(pair.cert), str(pair.key), announce,
                                                  receipts))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otp-sandbox")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
