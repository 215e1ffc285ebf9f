"""Child processes that cannot outlive the process that started them.

The kernel does it, not cleanup code: the child asks for ``PR_SET_PDEATHSIG=SIGKILL`` before
exec, so it dies even when its parent is SIGKILLed or crashes (no atexit hook or watchdog could
guarantee that). The signal follows the *thread* that started the child, so start children from
a long-lived thread (the main thread of pytest, the demo and the supervisor).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen`` tying the child's life to the caller's."""
    parent = os.getpid()
    return lambda: _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(126)
