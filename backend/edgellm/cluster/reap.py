"""Start-up reaping: Ray processes and temp dirs that a dead backend of this data dir left.

Every Ray process a node starts carries two marks in its environment (node.py):
MARKER_ENV (the cluster work dir, i.e. <data_dir>/ray) and OWNER_ENV (the owning backend's
pid and start time, so a reused pid never passes for the owner). The keeper (launch.py)
takes a node's whole tree down with its backend; this catches what it cannot (a keeper
killed itself, a process that escaped before the signal was armed). Only processes of
this work dir whose owner is gone are killed, by pid: another live backend on the same
data dir, or other users' Ray, are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from edgellm.cluster import procs

log = logging.getLogger(__name__)

MARKER_ENV = "EDGELLM_RAY_WORK_DIR"
OWNER_ENV = "EDGELLM_RAY_OWNER"
OWNER_FILE = "owner"  # in a node's temp dir: "<owner id>\n<work dir>\n"
TEMP_PREFIX = "edgellm-ray-"  # node temp dirs outside the work dir (path-length limit)


def owner_id(pid: int | None = None) -> str:
    """'<pid>.<start time in clock ticks>' of a process, '' when it is gone or a zombie."""
    pid = os.getpid() if pid is None else pid
    fields = procs.stat(pid)
    if not fields or fields[0] == "Z":
        return ""
    return f"{pid}.{fields[19]}"  # field 22 of /proc/PID/stat, counted after the comm


def owner_alive(owner: str) -> bool:
    pid, _, _ = owner.partition(".")
    return pid.isdigit() and owner_id(int(pid)) == owner


def reap(work_dir: Path) -> list[int]:
    """SIGKILL the marked Ray processes of `work_dir` whose owner is gone; remove their
    temp dirs (which hold a Ray token). Returns the pids signalled."""
    killed = []
    for pid in procs.marked(MARKER_ENV, str(work_dir)):
        owner = procs.environ(pid).get(OWNER_ENV, "")
        if owner and owner_alive(owner):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    if killed:
        log.warning("killed %d Ray processes a dead backend left in %s", len(killed), work_dir)
    _remove_stale_temps(work_dir)
    return killed


def _remove_stale_temps(work_dir: Path) -> None:
    for temp, owner in node_temps(work_dir):
        if not owner_alive(owner):
            shutil.rmtree(temp, ignore_errors=True)


def node_temps(work_dir: Path) -> list[tuple[Path, str]]:
    """The node temp dirs made for `work_dir` (in it, or in the system's temp dir when its
    path is too long), each with the owner its OWNER_FILE names."""
    candidates = list(work_dir.glob("ray-*")) if work_dir.is_dir() else []
    candidates += Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*")
    found = []
    for temp in candidates:
        try:
            owner, marked_dir = (temp / OWNER_FILE).read_text().splitlines()[:2]
        except (OSError, ValueError):
            continue  # not ours, or not a node temp dir of this scheme
        if Path(marked_dir) == work_dir:
            found.append((temp, owner))
    return found
