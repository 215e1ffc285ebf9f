"""``otp-sandbox auth0-emulator``: run the Auth0 Management API emulator."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "auth0-emulator",
        help="Auth0 Management API emulator (HTTPS, one port per tenant, admin API)",
        description="Serves an admin API; prints one JSON line with admin_url when ready.",
    )
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="working directory (ready.json; the CA if --ca-dir is not given)")
    parser.add_argument("--ca-dir", type=Path, default=None,
                        help="sandbox CA directory (default: STATE_DIR/ca)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--admin-port", type=int, default=0, help="admin port (0: any free)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from .server import run  # noqa: PLC0415  (keeps `otp-sandbox --help` fast)

    return run(args.state_dir, args.ca_dir, args.host, args.admin_port)
