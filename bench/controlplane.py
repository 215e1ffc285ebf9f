"""Start and stop each control-plane profile a few times and print how long it takes.

Run after ``otp-sandbox build`` (the binaries must be cached): ``python bench/controlplane.py``.
Target: the full profile ready in <= 20 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

from otp_sandbox.controlplane import PROFILES, ControlPlane, build


def measure(profile: str, rounds: int) -> list[tuple[float, float]]:
    timings = []
    for _ in range(rounds):
        plane = ControlPlane(profile=profile)  # type: ignore[arg-type]
        started = time.monotonic()
        plane.start()
        ready = time.monotonic()
        plane.stop()
        timings.append((ready - started, time.monotonic() - ready))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    build()
    for profile in PROFILES:
        timings = measure(profile, args.rounds)
        starts = [start for start, _ in timings]
        stops = [stop for _, stop in timings]
        print(
            f"{profile:8s} start: " + " ".join(f"{s:5.1f}s" for s in starts)
            + f"  (median {statistics.median(starts):.1f}s)"
            + f"   stop: median {statistics.median(stops):.1f}s"
        )


if __name__ == "__main__":
    main()
