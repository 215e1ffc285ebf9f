"""Run one control-plane component as a child process that cannot outlive its parent
(``otp_sandbox.lifetime``). Each child also gets its own session, so a terminal's Ctrl-C reaches
only Python, which then stops the components in order.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..lifetime import die_with_this_process


@dataclass
class Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def exited(self) -> int | None:
        return self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)


def spawn(name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> Component:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, start_new_session=True,
            preexec_fn=die_with_this_process(),
        )
    return Component(name, process, log_path)


def stop_all(components: Sequence[Component], grace: float = 10.0) -> None:
    """SIGTERM every component, SIGKILL those still running after ``grace`` seconds, reap all."""
    for component in components:
        if component.exited() is None:
            _signal(component, signal.SIGTERM)
    for component in components:
        try:
            component.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal(component, signal.SIGKILL)
            component.process.wait(timeout=grace)


_handed_out: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


# "i/n": this process picks ports only from the i-th of n equal slices, so n processes picking
# at once (parallel test workers) never hand out the same port before it is bound.
PORT_SHARD_ENV = "OTP_SANDBOX_PORT_SHARD"


def _port_candidates() -> range:
    ephemeral = _ephemeral_ports()
    candidates = range(20000, ephemeral.start) if ephemeral.start > 21000 else range(ephemeral.stop, 65536)
    shard = os.environ.get(PORT_SHARD_ENV)
    if not shard:
        return candidates
    index, count = (int(part) for part in shard.split("/"))
    size = len(candidates) // count
    return range(candidates.start + index * size, candidates.start + (index + 1) * size)


def free_port() -> int:
    """A loopback TCP port that is free now and stays free until someone binds it on purpose:
    picked below the kernel's ephemeral range, so no outgoing connection is given it meanwhile
    (a port the kernel handed out with bind(0) could be), and never handed out twice here."""
    candidates = _port_candidates()
    for _ in range(1000):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {candidates}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _signal(component: Component, signum: int) -> None:
    try:
        component.process.send_signal(signum)
    except ProcessLookupError:
        pass
