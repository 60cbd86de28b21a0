"""No Ray process outlives its backend: the keeper `ray start` runs under (a subreaper
with a parent-death signal, edgellm.cluster.launch) and start-up reaping of what a dead
backend left (reap.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgellm.cluster import procs
from edgellm.cluster.reap import (
    MARKER_ENV,
    OWNER_ENV,
    OWNER_FILE,
    node_temps,
    owner_id,
    reap,
)
from edgellm.v1 import cluster_control_pb2, cluster_control_pb2_grpc

TOKEN = "cd" * 32
# Upper bound for the kernel and Ray's workers to finish dying (not a speed claim).
GONE_WITHIN_S = 60.0
# Upper bound for the keeper (launch.py) to SIGKILL a dead backend's whole Ray tree; Ray's
# own agents, left to themselves, outlive their raylet by longer than this.
KEEPER_KILL_S = 20.0


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


# A command that leaves an orphan (its subshell exits: the inner sleep's parent is gone),
# one in a session of its own, and a direct child: the shapes Ray's processes take.
TREE = "(sleep 600 &); setsid sleep 600 & exec sleep 600"


def _marked(mark: str) -> list[int]:
    return procs.marked("EDGELLM_TEST_TREE", mark)


def _sleeps(mark: str) -> list[int]:
    return [pid for pid in _marked(mark) if _cmdline(pid).startswith("sleep")]


def _launch_tree(middle_code: str, mark: str) -> subprocess.Popen:
    """A middle process that runs the launcher over TREE (every process marked)."""
    return subprocess.Popen(
        [sys.executable, "-c", middle_code],
        env={**os.environ, "EDGELLM_TEST_TREE": mark, "TREE": TREE},
    )


LAUNCH = (
    "import os, subprocess, sys\n"
    "cmd = [sys.executable, '-m', 'edgellm.cluster.launch', str(os.getpid()),"
    " '--', '/bin/sh', '-c', os.environ['TREE']]\n"
)


def test_launcher_tree_dies_with_its_parent(tmp_path: Path) -> None:
    """A middle process runs the launcher over a tree with an orphan and a setsid'd
    process, and is SIGKILLed: every process of the tree dies at once."""
    mark = str(tmp_path)
    middle = _launch_tree(LAUNCH + "subprocess.Popen(cmd)\nimport time\ntime.sleep(600)\n", mark)
    try:
        _wait_gone(lambda: len(_sleeps(mark)) < 3, 30)
        assert len(_sleeps(mark)) == 3, [_cmdline(p) for p in _marked(mark)]
        middle.kill()
        middle.wait()
        assert _wait_gone(lambda: _marked(mark), 10) == []
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)


def test_launcher_kills_what_its_command_left(tmp_path: Path) -> None:
    """The command exits by itself: the launcher exits with its status, and takes the
    orphans the command left along."""
    mark = str(tmp_path)
    tree = "(sleep 600 &); setsid sleep 600 & exit 7"
    out = subprocess.run(
        [sys.executable, "-m", "edgellm.cluster.launch", str(os.getpid()), "--"]
        + ["/bin/sh", "-c", tree],
        env={**os.environ, "EDGELLM_TEST_TREE": mark},
        check=False,
        timeout=30,
    )
    try:
        assert out.returncode == 7
        assert _marked(mark) == []
    finally:
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)


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
    # Nothing is left, Ray's agents included (ray::DashboardAgent has no parent-death
    # signal and outlived its raylet by over a minute): the keeper kills the whole tree.
    survivors = _wait_gone(left, KEEPER_KILL_S)
    described = [(pid, _cmdline(pid)) for pid in survivors]
    for pid in survivors:  # clean up before failing, by pid
        os.kill(pid, signal.SIGKILL)
    assert described == []

    # The nodes' temp dirs, each holding the cluster's token, stay until a backend of the
    # same data dir starts again and reaps them (manager's reap); this is that start's reap.
    def temps() -> list[Path]:
        return [temp for d in work_dirs for temp, _ in node_temps(d)]

    assert temps(), "each node's temp dir names its data dir"
    for work_dir in work_dirs:
        reap(work_dir)
    assert temps() == []
