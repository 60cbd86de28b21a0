"""Model sharing figures: `model_pull_ratio` and `cold_worker_first_token_s`.

Two real Kubo daemons on loopback, connected; A publishes the embedded model's store
entry (edgellm.models.share.publish). Each round empties B's blockstore (repo gc) and then
fetches the model directory once with edgellm's pull (list, stream every file while a
thread computes its CID, install into a fresh store) and once with a stock `ipfs get` of
the same CID through the same Kubo B: `model_pull_ratio` is edgellm's throughput over
`ipfs get`'s (goal >= 0.9; 1.10 on a shared 2-core machine, 538 MB at 81 vs 74 MB/s).

`cold_worker_first_token_s`: a worker that never had the model, measured in-process: pull
into an empty store, load the engine from it, first token of a short prompt; the pull's
share beside it. (Through a worker process it adds the process start and the swarm's
lookup, which the discovery figures cover.)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kv_figures import REPO, Kubo  # noqa: E402

from edgellm.engine.base import EngineConfig  # noqa: E402
from edgellm.engine.types import GenerationRequest, SamplingParams  # noqa: E402
from edgellm.models import share  # noqa: E402
from edgellm.models.store import ModelStore  # noqa: E402

MODEL_ID = "smollm2-135m"
ROUNDS = 2


def _quiet(phase: str, done: int, total: int) -> None:
    pass


def _gc(kubo: Kubo) -> None:
    httpx.post(f"{kubo.api}/api/v0/repo/gc", timeout=120).raise_for_status()


def _pull(b: Kubo, dir_cid: str, root: Path, a: Kubo) -> tuple[float, ModelStore]:
    store = ModelStore(Path(tempfile.mkdtemp(dir=root)))
    t0 = time.monotonic()
    share.pull(store, dir_cid, b.api, _quiet, holders=(a.multiaddr,))
    return time.monotonic() - t0, store


def _ipfs_get(binary: Path, b: Kubo, dir_cid: str, root: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=root)) / "model"
    env = {**os.environ, "IPFS_PATH": str(b.repo)}
    t0 = time.monotonic()
    subprocess.run(
        [str(binary), "get", "-o", str(out), dir_cid], env=env, check=True, capture_output=True
    )
    elapsed = time.monotonic() - t0
    shutil.rmtree(out.parent)
    return elapsed


def _first_token(store: ModelStore) -> float:
    from edgellm.engine.torch.engine import TorchEngine

    t0 = time.monotonic()
    engine = TorchEngine.load(EngineConfig(store.path(MODEL_ID)))
    request = GenerationRequest("b", prompt="Hello", sampling=SamplingParams(max_tokens=1))
    next(iter(engine.generate(request)))
    elapsed = time.monotonic() - t0
    engine.close()
    return elapsed


def figures(source: ModelStore, binary: Path) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="edgellm-model-bench-"))
    a = b = None
    try:
        a = Kubo(binary, root / "kubo-a")
        b = Kubo(binary, root / "kubo-b")
        shared = share.publish(source, MODEL_ID, a.api)
        size = source.manifest(MODEL_ID).weights_bytes
        pulls, gets, colds, shares = [], [], [], []
        for _ in range(ROUNDS):
            _gc(b)
            elapsed, store = _pull(b, shared.dir_cid, root, a)
            pulls.append(elapsed)
            first = _first_token(store)
            colds.append(elapsed + first)
            shares.append(elapsed / (elapsed + first))
            shutil.rmtree(store.models_dir)
            _gc(b)
            gets.append(_ipfs_get(binary, b, shared.dir_cid, root))
        pull_s, get_s = statistics.median(pulls), statistics.median(gets)
        return {
            "model_pull_ratio": get_s / pull_s,
            "model_pull_mb_per_s": size / 1e6 / pull_s,
            "ipfs_get_mb_per_s": size / 1e6 / get_s,
            "model_pull_bytes": size,
            "cold_worker_first_token_s": statistics.median(colds),
            "cold_worker_pull_share": statistics.median(shares),
            "rounds": ROUNDS,
        }
    finally:
        for kubo in (b, a):
            if kubo is not None:
                kubo.stop()
        shutil.rmtree(root, ignore_errors=True)


def provider() -> dict[str, Any]:
    """The `models` provider of bench/run.py."""
    from edgellm.config import load_config

    binary = Path(os.environ.get("EDGELLM_IPFS_BIN") or REPO / ".bin" / "ipfs")
    if not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"no Kubo binary at {binary} (make setup builds it)")
    store = ModelStore(load_config().models_dir)
    store.ensure(MODEL_ID)
    return figures(store, binary)


if __name__ == "__main__":
    import json

    print(json.dumps(provider(), indent=2))
