"""A Ray node's command line names a distinct free port for each of its components: Ray
refuses a start that names one port twice (a CI run lost a P/D test to that). Its
environment gives stage threads a bounded spin unless the user chose how they wait. It runs
Ray's `start` without importing the subcommands no node uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.cluster.address import free_ports
from edgellm.cluster.node import HEAD_PORT_FLAGS, PORT_FLAGS, NodeConfig, _command, stage_env


def test_free_ports_are_distinct() -> None:
    for _ in range(50):
        ports = free_ports("127.0.0.1", 8)
        assert len(set(ports)) == 8 and all(0 < p < 65536 for p in ports)


@pytest.mark.parametrize(
    ("head_address", "extra"),
    [(None, HEAD_PORT_FLAGS), ("127.0.0.1:6379", ())],
    ids=["head", "worker"],
)
def test_every_component_gets_its_own_port(tmp_path: Path, head_address, extra) -> None:
    for _ in range(20):
        cmd = _command(NodeConfig("127.0.0.1", tmp_path, head_address=head_address), tmp_path)
        ports = [int(cmd[cmd.index(flag) + 1]) for flag in (*PORT_FLAGS, *extra)]
        assert len(set(ports)) == len(ports), ports
    assert ("--head" in cmd) == (head_address is None)


@pytest.mark.parametrize(
    ("environ", "want"),
    [
        ({"PATH": "/bin"}, {"PATH": "/bin", "GOMP_SPINCOUNT": "10000"}),
        ({"GOMP_SPINCOUNT": "5"}, {"GOMP_SPINCOUNT": "5"}),
        # libgomp takes GOMP_SPINCOUNT over OMP_WAIT_POLICY: none is added beside it.
        ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}),
    ],
    ids=["default", "user spin count", "user wait policy"],
)
def test_stage_env_keeps_the_users_wait_setting(environ, want) -> None:
    assert stage_env(environ) == want


def test_ray_start_imports_no_unused_subcommand() -> None:
    """edgellm.cluster.ray_start's command line still has `start` (every Ray test starts
    nodes through it), and imports none of Serve's, the jobs' or the state API's command
    lines, nor FastAPI, which they pull in."""
    script = (
        "import sys; from edgellm.cluster import ray_start; group = ray_start.cli(); "
        "print(sorted(group.commands)); "
        "print([m for m in ('ray.serve', 'ray.util.state', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    commands, heavy = out.stdout.splitlines()
    assert "'start'" in commands and "'stop'" in commands, out.stderr
    for unused in ("'serve'", "'job'", "'list'", "'logs'"):
        assert unused not in commands
    assert heavy == "[]"
    cmd = _command(NodeConfig("127.0.0.1", Path("/tmp")), Path("/tmp"))
    assert cmd[1:4] == ["-m", "edgellm.cluster.ray_start", "start"]
