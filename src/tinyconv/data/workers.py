"""Worker processes that exit when the run that started them dies.

A SIGKILLed run (an out-of-memory kill, `kill -9`, a closed CI job) gets no chance to shut its
process pool down, and pool workers blocked on their task queue then wait forever, ~265 MB
each. Each worker therefore asks the kernel for SIGKILL when its parent dies (Linux
PR_SET_PDEATHSIG; with a forkserver the parent is the fork server, which itself exits when the
run dies), and a watchdog thread covers other systems and the race where the parent died before
the request: it polls that the run is still there.

Torch-free and light: firmware_sim's pools can use it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
POLL_S = 0.5


def die_with_parent(run_pid: int) -> None:
    """Call first thing in a worker process (a pool initializer); `run_pid` is the run's pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # on failure the watchdog below still works
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if not pid_alive(run_pid) or os.getppid() != parent:
        os._exit(1)  # the run died before the request took effect
    threading.Thread(target=_watch, args=(run_pid, parent), name="tinyconv-parent-watchdog", daemon=True).start()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A dead run that is not yet reaped (a zombie) still answers kill(0).
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _watch(run_pid: int, parent: int) -> None:
    while True:
        time.sleep(POLL_S)
        if os.getppid() != parent or not pid_alive(run_pid):
            os._exit(1)
