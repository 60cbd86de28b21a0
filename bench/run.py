"""`make bench`: run every figure provider, merge their figures into one JSON file.

Writes bench/results/<UTC timestamp>-<short sha>.json and, for a run of every provider,
copies it to latest.json (a partial run, e.g. `bench/run.py serve`, is marked "partial"
and leaves latest.json as it was).
A provider returns {figure name: {"value", "unit", "baseline", "ratio", ...}}; one that
fails is reported (in "errors" and on stderr) and the others still run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MODEL_ID = "smollm2-135m"
GO_BENCH_TIMEOUT_S = 900

Provider = Callable[[], dict[str, Any]]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    import torch

    from edgellm.server.status import device_name, memory, resolve_device

    device = resolve_device("auto")
    total, _ = memory("cpu")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": total,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device_name(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def engine_provider() -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import engine_figures

    from edgellm.config import load_config
    from edgellm.models.store import ModelStore

    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return engine_figures.figures(store.path(MODEL_ID))


def vllm_provider() -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import vllm_figures

    from edgellm.config import load_config
    from edgellm.models.store import ModelStore

    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return vllm_figures.figures(store.path(MODEL_ID))


def pipeline_provider() -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import pipeline_figures

    from edgellm.config import load_config
    from edgellm.models.store import ModelStore

    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return pipeline_figures.figures(store.path(MODEL_ID))


def serve_provider() -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import serve_figures

    from edgellm.config import load_config
    from edgellm.models.store import ModelStore

    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return serve_figures.figures(store.path(MODEL_ID))


def batch_provider() -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import batch_figures

    from edgellm.config import load_config
    from edgellm.models.store import ModelStore

    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return batch_figures.figures(store.path(MODEL_ID))


def go_provider(package: str) -> Provider:
    """A Go program that prints one JSON object of figures on stdout."""

    def run() -> dict[str, Any]:
        done = subprocess.run(
            ["go", "run", package],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            timeout=GO_BENCH_TIMEOUT_S,
            check=True,
        )
        return json.loads(done.stdout)

    return run


PROVIDERS: dict[str, Provider] = {
    "engine": engine_provider,
    "vllm": vllm_provider,
    "discovery": go_provider("./bench/discovery"),
    "pipeline": pipeline_provider,
    "kv": lambda: __import__("kv_figures").provider(),  # bench/ is on sys.path (a script)
    "serve": serve_provider,
    "batch": batch_provider,
    "linkcut": lambda: __import__("linkcut_figures").figures(),  # bench/ is on sys.path
    "models": lambda: __import__("model_figures").provider(),
}


def collect(providers: dict[str, Provider]) -> tuple[dict[str, Any], dict[str, str]]:
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, provider in providers.items():
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            result = provider()
            if not isinstance(result, dict):
                raise TypeError(f"provider returned {type(result).__name__}, not a dict")
            figures.update(result)
        except Exception as exc:  # noqa: BLE001 - one failing provider must not stop the rest
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        print(f"bench: {name} took {time.monotonic() - started:.0f}s", file=sys.stderr)
    return figures, errors


def main(argv: list[str]) -> int:
    chosen = {n: p for n, p in PROVIDERS.items() if not argv or n in argv}
    figures, errors = collect(chosen)
    sha = _git("rev-parse", "--short", "HEAD")
    report = {
        "git": _git("rev-parse", "HEAD"),
        "machine": machine(),
        "figures": figures,
    }
    if errors:
        report["errors"] = errors
    partial = sorted(chosen) != sorted(PROVIDERS)
    if partial:
        report["partial"] = sorted(chosen)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-{sha}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    # latest.json holds a whole run's figures: a partial run (some providers
    # named on the command line) keeps its own file and leaves latest alone.
    if not partial:
        shutil.copyfile(path, RESULTS / "latest.json")
    print(json.dumps(figures, indent=2, sort_keys=True))
    print(f"bench: wrote {path}", file=sys.stderr)
    try:
        for plotted in __import__("plots").plot(RESULTS):  # bench/ is on sys.path (a script)
            print(f"bench: plotted {plotted}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - a plot must not lose the figures
        traceback.print_exc(file=sys.stderr)
    return 1 if errors and not figures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
