"""Run a command whose whole process tree dies with its parent:
`python -m edgellm.cluster.launch PID -- CMD...`.

`ray start --block` has no parent-death signal of its own, and Ray's fate-sharing does not
reach every process it starts: raylet's agents (ray::DashboardAgent where Ray's dashboard
packages are installed) have no parent-death signal and outlived a SIGKILLed backend's
raylet by over a minute here. So this launcher stays as a keeper between the backend and
Ray:

- it is a child subreaper (PR_SET_CHILD_SUBREAPER), so every Ray process whose parent dies
  is reparented to it instead of to init, and stays its descendant;
- it has a parent-death signal (PR_SET_PDEATHSIG, SIGTERM): when the backend (the thread
  that spawned us, see node.py's spawner) dies, even by SIGKILL, it SIGKILLs every
  descendant at once, reaps them, and exits;
- when the command exits by itself, it kills what the command left and exits with its
  status. An orderly stop (SIGTERM from the backend, which kills Ray's components at once,
  node._stop) is passed to the command, which gets its own grace.

Not a preexec_fn in the backend: those are unsafe in a threaded process like the gRPC
server. The keeper is a small Python process per Ray node.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

from edgellm.cluster import procs

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Exit status when the parent was already gone before the signal was armed.
PARENT_GONE = 3


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def arm(parent_pid: int) -> bool:
    """Become a subreaper and ask for SIGTERM when the parent dies; False when it already
    has (we were reparented before the signal was armed)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent_pid


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes below `root` in the parent tree."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = procs.stat(int(entry))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def kill_descendants() -> None:
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap_all() -> None:
    """Kill and reap every descendant until none is left (a process forked meanwhile is
    reparented to us when its parent dies, so the loop sees it)."""
    while True:
        kill_descendants()
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class Keeper:
    def __init__(self, parent_pid: int, cmd: list[str]) -> None:
        self._parent = parent_pid
        self._cmd = cmd
        self._child = 0  # the command's pid once started, 0 again once reaped

    def on_term(self, signum: int, frame: object) -> None:
        if os.getppid() != self._parent:  # the parent-death signal: nothing may outlive it
            kill_descendants()
        elif self._child:  # an orderly stop: the command takes its own grace
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGTERM)

    def run(self) -> int:
        self._child = subprocess.Popen(self._cmd).pid  # reaped below, not by Popen
        status = self._wait_child()
        reap_all()  # what the command left: orphans reparented to us
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    def _wait_child(self) -> int:
        """Reap children (orphans too) until the command itself has exited; its status."""
        while True:
            try:
                done, status = os.waitpid(-1, 0)
            except ChildProcessError:  # none left: cannot happen before the command exits
                return 0
            if done == self._child:
                self._child = 0
                return status


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m edgellm.cluster.launch PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    keeper = Keeper(int(argv[0]), argv[2:])
    signal.signal(signal.SIGTERM, keeper.on_term)  # before arming: the signal may come at once
    if not arm(int(argv[0])):
        return PARENT_GONE
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
