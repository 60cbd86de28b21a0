"""`python -m edgellm.models prepare [--models-dir D] MODEL` converts a model into the store.

Progress goes to stderr as a status line when stderr is a terminal; piped, it is quiet.
The store directory is printed on stdout, so scripts can capture it.
"""

from __future__ import annotations

import argparse
import sys
import time

from edgellm.config import load_config
from edgellm.errors import EdgeLLMError
from edgellm.models.store import ModelStore


class StatusLine:
    """Rewrites one stderr line per phase, at most ten times a second."""

    def __init__(self) -> None:
        self._last = 0.0
        self._phase = ""

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase == self._phase and now - self._last < 0.1 and done != total:
            return
        if phase != self._phase and self._phase:
            sys.stderr.write("\n")
        self._phase, self._last = phase, now
        amount = f"{100 * done / total:5.1f}%" if total else "..."
        sys.stderr.write(f"\r{phase}: {amount}")
        sys.stderr.flush()

    def close(self) -> None:
        if self._phase:
            sys.stderr.write("\n")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgellm.models")
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="convert a model into the model store")
    prepare.add_argument("model", help="model id, e.g. smollm2-135m")
    prepare.add_argument("--models-dir", help="model store (default: from config)")
    prepare.add_argument("--config", help="edgellm.yaml to read")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        config = load_config(args.config, {"models_dir": args.models_dir})
        store = ModelStore(config.models_dir)
        status = StatusLine() if sys.stderr.isatty() else None
        try:
            store.ensure(args.model, progress=status)
        finally:
            if status is not None:
                status.close()
    except EdgeLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(store.path(args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
