"""Check the compose dev swarm's client output (make compose-test).

The client lists the peers it found (`edgellm peers --json`), then answers a prompt with
greedy decoding (`edgellm infer`). Passes when it saw the swarm's three workers, each
serving the embedded model, and answered with exactly the text of single-process
transformers `generate` (tests/python/test_engine.py::test_capital_of_france pins it).

    python tests/python/compose_client.py CLIENT_LOG
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ANSWER = "The capital of France is Paris."
MODEL = "smollm2-135m"
WORKERS = 3  # bootstrap, worker-1, worker-2


def peers_listed(lines: list[str]) -> list[dict]:
    """The first JSON list in the output (peers --json may span several lines)."""
    for start, line in enumerate(lines):
        if not line.startswith("["):
            continue
        for end in range(start + 1, len(lines) + 1):
            try:
                value = json.loads("\n".join(lines[start:end]))
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
    raise SystemExit("compose-test: the client printed no peer list")


def check(text: str) -> list[str]:
    """The problems found in the client's output (none: it passes)."""
    lines = text.splitlines()
    peers = peers_listed(lines)
    problems = []
    serving = [p for p in peers if any(m.get("id") == MODEL for m in p.get("models", []))]
    if len(peers) != WORKERS or len(serving) != WORKERS:
        ids = [p.get("peer_id") for p in peers]
        problems.append(
            f"saw {len(peers)} peers ({len(serving)} serving {MODEL}), want {WORKERS}: {ids}"
        )
    if len({p.get("peer_id") for p in peers}) != len(peers):
        problems.append("a peer is listed twice")
    if ANSWER not in (line.strip() for line in lines):
        problems.append(f"no answer line {ANSWER!r}")
    return problems


def main(argv: list[str]) -> int:
    text = Path(argv[1]).read_text()
    problems = check(text)
    for problem in problems:
        print(f"compose-test: {problem}", file=sys.stderr)
    if problems:
        print(text[-4000:], file=sys.stderr)
        return 1
    print(f"compose-test: passed: the client saw {WORKERS} workers and answered {ANSWER!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
