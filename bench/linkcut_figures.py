"""failover_after_link_cut_s: from a worker's cut link to the next streamed token.

Measured through the real-hosts test (internal/cli TestHosts, its link-cut subtest): a
requester and three workers on four network namespaces with their own addresses on one
bridged LAN; `infer --stages 2` streams, the cable of one stage's worker is pulled (its
switch port set down; its processes keep running), the requester notices (heartbeats),
re-plans onto the spare, replays, and streams on. The figure is the p50 of RUNS cuts (one
swarm, the link restored and the worker back between cuts), with p95/p99 and the samples.
Needs root (namespaces); otherwise the provider raises and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from serve_figures import percentiles

REPO = Path(__file__).resolve().parents[1]
RUNS = 3
TIMEOUT_S = 1800


def figures() -> dict[str, Any]:
    if os.geteuid() != 0:
        raise RuntimeError("failover_after_link_cut_s needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="edgellm-bench-linkcut-") as tmp:
        out = Path(tmp) / "samples.json"
        env = {
            **os.environ,
            "EDGELLM_BENCH_LINKCUT_OUT": str(out),
            "EDGELLM_BENCH_LINKCUT_RUNS": str(RUNS),
            "EDGELLM_IPFS_BIN": os.environ.get("EDGELLM_IPFS_BIN", str(REPO / ".bin" / "ipfs")),
        }
        test = ["go", "test", "-count=1", "-timeout", "28m", "-run", "^TestHosts$/cut"]
        done = subprocess.run(
            [*test, "-v", "./internal/cli/"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        if done.returncode != 0:  # say why, not only that it failed
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"{' '.join(test)} exited {done.returncode}:\n{tail}")
        samples = json.loads(out.read_text())["cut_to_next_token_s"]
    parts = percentiles(samples)
    return {
        "failover_after_link_cut_s": {
            "value": round(parts["p50"], 2),
            "unit": "s",
            "cut_to_next_token_s": parts,
            "samples": [round(s, 3) for s in samples],
            "measured_by": "go test -run TestHosts/cut (4 namespaces, switch port down)",
        }
    }
