"""Exec a command that dies with its parent: `python -m edgellm.cluster.launch PID -- CMD...`.

`ray start --block` has no parent-death signal of its own, so a backend killed with SIGKILL
used to leave its Ray node running. This launcher sets PR_SET_PDEATHSIG (SIGKILL) and then
execs the command in place, which keeps the setting: when the backend (the thread that
spawned us, see node.py's spawner) dies, the kernel kills `ray start`, and Ray's own
fate-sharing (its raylet, GCS and agents have PR_SET_PDEATHSIG on `ray start`) takes the
rest down. Not a preexec_fn: those are unsafe in a threaded process like the gRPC server.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
# Exit status when the parent was already gone before the signal was armed.
PARENT_GONE = 3


def arm(parent_pid: int) -> bool:
    """Ask for SIGKILL when the parent dies; False when it already has (we were reparented)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent_pid


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m edgellm.cluster.launch PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    if not arm(int(argv[0])):
        return PARENT_GONE
    os.execv(argv[2], argv[2:])
    return 1  # unreachable: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
