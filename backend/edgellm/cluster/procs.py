"""Processes by session id: what a `ray start` launcher (started with setsid) left running.

Ray puts each worker in its own process group, so a process-group kill misses them; they
all stay in the launcher's session, whose id is the launcher's pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path

POLL_S = 0.1
# A node's stop: SIGKILL for its components and SIGTERM for its launchers, TERM_GRACE_S for
# those to exit, SIGKILL, KILL_WAIT_S (node._stop). The whole backend's stop
# (gRPC grace, then its nodes) must end well inside the Go supervisor's stop timeout
# (internal/backend, default 30 s) so its SIGKILL never cuts a stop short; and if it does,
# the parent-death signal (launch.py) still ends the nodes.
TERM_GRACE_S = 5.0
KILL_WAIT_S = 3.0


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live_where(field: int, value: int) -> list[int]:
    """Live (not zombie) processes whose stat `field` (1: parent, 3: session) is `value`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat(int(entry))
        if fields and fields[0] != "Z" and int(fields[field]) == value:
            found.append(int(entry))
    return found


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes in session `sid`."""
    return _live_where(3, sid)


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    return _live_where(1, pid)


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` started with ({} when gone or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def marked(name: str, value: str) -> list[int]:
    """Live processes of this user whose environment has name=value (a leak check)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        fields = stat(int(entry))
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if fields and fields[0] != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop_session(sid: int, spared: Collection[int], grace_s: float = TERM_GRACE_S) -> list[int]:
    """SIGKILL every process of session `sid` but the `spared` ones, which get SIGTERM,
    then SIGKILL what is left after `grace_s`; returns the pids still alive after that
    (empty on success)."""
    members = session_members(sid)
    _signal_all([pid for pid in members if pid not in spared], signal.SIGKILL)
    _signal_all([pid for pid in members if pid in spared], signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (left := session_members(sid)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    _signal_all(left, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while (left := session_members(sid)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return left
