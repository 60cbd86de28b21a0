"""scripts/in-netns.sh, which every Ray test runs under: without a namespace it skips on a
developer's machine but fails under CI=true, so a CI without root cannot pass having run no
Ray test. Run as an unprivileged user (dropped to nobody when the test runs as root)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "in-netns.sh"


def _unprivileged(ci: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    command = ["bash", "-s", "--", "echo", "RAN"]  # the script on stdin: nobody may read it
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(
        command, input=SCRIPT.read_text(), env=env, capture_output=True, text=True, timeout=30
    )
    assert "RAN" not in result.stdout  # never run outside a namespace
    return result


@pytest.mark.parametrize(("ci", "code"), [(None, 0), ("false", 0), ("true", 1)])
def test_without_a_namespace_ci_fails_and_a_developer_skips(ci, code) -> None:
    result = _unprivileged(ci)
    assert result.returncode == code, result.stderr
    assert ("FAILED" if code else "skipping") in result.stderr
    assert "needs root" in result.stderr
