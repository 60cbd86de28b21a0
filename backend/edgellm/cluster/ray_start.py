"""`ray start` without the command-line tools it never runs:
`python -m edgellm.cluster.ray_start start --block ...`.

Ray's CLI module (ray.scripts.scripts) imports, for its `serve`, `job` and state
(`list`/`get`/`summary`/`logs`) subcommands, Ray Serve's, the jobs' and the state API's
command lines: 1.4 s of a 2.4 s import here, and FastAPI with them, on every node a cold
split starts (the head, then each worker's join, one after the other on the first token's
path). Ray imports each of them in a `try` and leaves the subcommand out when the import
fails, so marking them missing in sys.modules (a None entry makes `import` raise
ImportError) leaves `ray start` exactly as it was, 1.0 s to import instead of 2.4. It also
waits longer than Ray does for its node to register (REGISTER_WAIT_S).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

# Optional subcommands of Ray's CLI (ray/scripts/scripts.py, Ray 2.60), none used by a node.
UNUSED_CLI_MODULES = (
    "ray.serve.scripts",
    "ray.dashboard.modules.job.cli",
    "ray.util.state.state_cli",
)


# Ray waits 30 s, hard-coded (Node.__init__, Ray 2.60), for a new node's raylet to register
# with the GCS, and then fails `ray start`: "The current node timed out during startup". A
# raylet that is slow to start (a busy volunteer's machine; in CI, a one-CPU worker while the
# other lane ran vLLM) made the worker refuse the join, twice in three fresh-clone CI runs.
# Ray asks services.get_node in a loop with no pause, each ask a new GCS connection; here
# each ask waits, asking again every REGISTER_POLL_S, until the node is known or
# REGISTER_WAIT_S has passed, so Ray's check of its 30 s only ever follows a success or this
# longer wait. A raylet that has not registered by then is given up on, and the node is
# started once more (node.START_ATTEMPTS): twice REGISTER_WAIT_S, and each start's own
# seconds, stay under the requester's two minutes for a join (internal/requester's
# joinTimeout) and NodeConfig.start_timeout_s. A fresh-clone CI run lost a join to a
# raylet that never registered in 90 s while the other worker's joined the same head.
REGISTER_WAIT_S = 45.0
REGISTER_POLL_S = 0.2


def patient(get_node: Callable[[str, str], dict]) -> Callable[[str, str], dict]:
    """`get_node` asked again while it raises RuntimeError (the node is not registered yet),
    for up to REGISTER_WAIT_S."""

    def get_node_when_registered(gcs_address: str, node_id: str) -> dict:
        deadline = time.monotonic() + REGISTER_WAIT_S
        while True:
            try:
                return get_node(gcs_address, node_id)
            except RuntimeError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(REGISTER_POLL_S)

    return get_node_when_registered


def _not_started(self, **kwargs) -> None:
    """In place of a Node method that starts a process no EdgeLLM cluster uses."""


# Processes a head starts that no EdgeLLM cluster talks to (Ray 2.60, Node.start_head_processes):
# - the API server (dashboard/dashboard.py), which `--include-dashboard=false` still starts,
#   for its usage-stats module (usage stats are off, --disable-usage-stats), and which
#   `ray start` waits for, polling every 0.1 s until it has published its URL: about a second
#   of CPU importing Ray's dashboard on the head's start, on the first token's path;
# - the Ray client server (ray.util.client.server), for `ray://` clients: the requester's
#   backend connects as a plain driver; 1.2 s of CPU, and one more port open on the head.
# A node's processes are otherwise Ray's own (GCS, raylet, its agents, workers).
UNUSED_HEAD_PROCESSES = ("start_api_server", "start_ray_client_server")


def cli():
    """Ray's command line (a click group) without the unused subcommands' modules, waiting
    up to REGISTER_WAIT_S for its node's raylet to register, and starting none of the
    UNUSED_HEAD_PROCESSES."""
    for name in UNUSED_CLI_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    from ray._private import services
    from ray._private.node import Node
    from ray.scripts.scripts import cli as ray_cli

    services.get_node = patient(services.get_node)
    for method in UNUSED_HEAD_PROCESSES:
        setattr(Node, method, _not_started)
    return ray_cli


def main() -> None:
    cli()(prog_name="ray")


if __name__ == "__main__":
    main()
