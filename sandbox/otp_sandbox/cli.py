"""``otp-sandbox``: local stand-ins for everything outside the cluster.

Each sandbox module registers its own subcommand here with one line.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otp-sandbox", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)

    from .eightbyeight import cli as eightbyeight_cli  # noqa: PLC0415

    eightbyeight_cli.register(subparsers)
    from .auth0_emulator import cli as auth0_cli  # noqa: PLC0415

    auth0_cli.register(subparsers)
    from .controlplane import cli as controlplane_cli  # noqa: PLC0415

    controlplane_cli.register(subparsers)
    from . import demo  # noqa: PLC0415

    demo.register(subparsers)
    from . import image  # noqa: PLC0415

    image.register(subparsers)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
