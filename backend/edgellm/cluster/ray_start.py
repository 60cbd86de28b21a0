"""`ray start` without the command-line tools it never runs:
`python -m edgellm.cluster.ray_start start --block ...`.

Ray's CLI module (ray.scripts.scripts) imports, for its `serve`, `job` and state
(`list`/`get`/`summary`/`logs`) subcommands, Ray Serve's, the jobs' and the state API's
command lines: 1.4 s of a 2.4 s import here, and FastAPI with them, on every node a cold
split starts (the head, then each worker's join, one after the other on the first token's
path). Ray imports each of them in a `try` and leaves the subcommand out when the import
fails, so marking them missing in sys.modules (a None entry makes `import` raise
ImportError) leaves `ray start` exactly as it was, 1.0 s to import instead of 2.4.
"""

from __future__ import annotations

import sys

# Optional subcommands of Ray's CLI (ray/scripts/scripts.py, Ray 2.60), none used by a node.
UNUSED_CLI_MODULES = (
    "ray.serve.scripts",
    "ray.dashboard.modules.job.cli",
    "ray.util.state.state_cli",
)


def cli():
    """Ray's command line (a click group) without the unused subcommands' modules."""
    for name in UNUSED_CLI_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    from ray.scripts.scripts import cli as ray_cli

    return ray_cli


def main() -> None:
    cli()(prog_name="ray")


if __name__ == "__main__":
    main()
