"""An EdgeLLM process is a Ray driver only of a cluster its node started: a Ray call made
while it is not connected (a replaced plan's engine closing in the background after its
cluster session ended) fails instead of starting a local cluster of Ray's own, with its
dashboard and monitor, in the default temp dir. Stopping actors that cannot be stopped
any more is not an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Run in a fresh process: Ray reads the setting when it is first imported, and this test
# process may hold a cluster of another test's. TMPDIR points Ray's default temp dir at
# tmp_path, so a cluster started by mistake would show there.
PROBE = """
import edgellm.cluster.calls as calls
import ray
calls.RayCalls().kill([None, None])  # nothing to stop: no error
try:
    ray.wait([], timeout=0)
except ray.exceptions.RaySystemError as exc:
    print("refused:", ray.is_initialized(), str(exc).split(".")[0])
"""


def _probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_AUTO_CONNECT"}
    environ.update(env, TMPDIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=120
    )


def test_a_ray_call_outside_a_cluster_fails_and_starts_nothing(tmp_path: Path) -> None:
    out = _probe(tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "refused: False System error: Ray has not been started yet"
    assert not (tmp_path / "ray").exists()
