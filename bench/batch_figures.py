"""Continuous batching figures: total decode tokens/s of the torch engine with 8
concurrent requests over the same with 1, on this machine's whole-model engine
(`batch_throughput_ratio`) and on a two-worker split over Ray (`pipeline_batch_throughput_ratio`).

A run starts N requests at once, each on its own thread (as gRPC handlers are) with raw
prompts that go on for up to MAX_TOKENS tokens, and stamps every token as it arrives. Its
decode rate is measured while all N decode: the tokens that arrive after the last
request's first token (every prefill done) until the first request's last token (one that
stops at EOS ends the window early), over that time. Each figure is
the ratio of the medians over REPEATS runs, with the parts: tokens/s p50/p95 of each
side, the inter-token latency p50/p95 a user sees at N, and the decode steps by batch size.

The Ray part runs in a loopback-only network namespace (scripts/in-netns.sh, root), as
the Ray tests do: a head and two worker nodes on this machine, the model split at layer
SPLIT, the same runs through the head's engine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IN_NETNS = REPO / "scripts" / "in-netns.sh"
MODEL_ID = "smollm2-135m"
CONCURRENT = 8
MAX_TOKENS = 48
REPEATS = 3
SPLIT = 15
RAY_TIMEOUT_S = 900
PROMPTS = [
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "Once upon a time, in a land far away, there lived a",
    "The following is a list of European capitals: Paris, Berlin,",
    "import numpy as np\nimport torch\n",
    "Chapter 1\n\nThe rain had not stopped for three days when",
    "Monday, Tuesday, Wednesday,",
    "<html>\n<head>\n<title>",
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _one_run(engine, n: int) -> tuple[float, list[float]]:
    """(decode tokens/s while all n decode, their inter-token gaps in ms) of n requests."""
    from edgellm.engine.types import GenerationRequest, SamplingParams

    stamps: list[list[float]] = [[] for _ in range(n)]

    def consume(i: int) -> None:
        request = GenerationRequest(
            f"bench-{i}",
            raw_prompt=PROMPTS[i % len(PROMPTS)],
            sampling=SamplingParams(max_tokens=MAX_TOKENS),
        )
        for _ in engine.generate(request):
            stamps[i].append(time.perf_counter())

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    start = max(s[0] for s in stamps)
    end = min(s[-1] for s in stamps)
    tokens = sum(1 for s in stamps for t in s if start < t <= end)
    gaps = [
        (b - a) * 1000.0
        for s in stamps
        for a, b in zip(s, s[1:], strict=False)
        if start <= a and b <= end
    ]
    return (tokens / (end - start) if end > start else 0.0), gaps


def measure(engine, name: str) -> dict[str, Any]:
    _one_run(engine, 2)  # warm-up (kernels, the slot pool's first touch)
    single = [_one_run(engine, 1)[0] for _ in range(REPEATS)]
    batched, gaps = [], []
    before = dict(engine.step_sizes)
    for _ in range(REPEATS):
        rate, run_gaps = _one_run(engine, CONCURRENT)
        batched.append(rate)
        gaps.extend(run_gaps)
    steps = {
        str(size): count - before.get(size, 0)
        for size, count in sorted(engine.step_sizes.items())
        if count - before.get(size, 0)
    }
    ratio = statistics.median(batched) / statistics.median(single)
    return {
        name: {
            "value": ratio,
            "unit": "ratio",
            "baseline": statistics.median(single),
            "ratio": ratio,
            "concurrent": CONCURRENT,
            "max_tokens": MAX_TOKENS,
            "repeats": REPEATS,
            "single_tok_s_p50": statistics.median(single),
            "single_tok_s_p95": _percentile(single, 0.95),
            "batch_tok_s_p50": statistics.median(batched),
            "batch_tok_s_p95": _percentile(batched, 0.95),
            "batch_itl_ms_p50": _percentile(gaps, 0.50),
            "batch_itl_ms_p95": _percentile(gaps, 0.95),
            "batch_itl_ms_p99": _percentile(gaps, 0.99),
            "decode_steps_by_batch_size": steps,
        }
    }


def local_figures(store_dir: Path) -> dict[str, Any]:
    from edgellm.engine.base import EngineConfig
    from edgellm.engine.registry import engine_class

    engine = engine_class("torch").load(EngineConfig(store_dir, max_batch=CONCURRENT))
    try:
        return measure(engine, "batch_throughput_ratio")
    finally:
        engine.close()


def ray_main(store_dir: Path, work_dir: Path) -> int:
    """In the network namespace: head + two workers, then the runs; prints the JSON."""
    from edgellm.cluster.manager import ClusterManager
    from edgellm.cluster.plan import Plan, PlanStage
    from edgellm.cluster.token import RayToken
    from edgellm.engine.torch.stage import LayerRange
    from edgellm.models.store import ModelStore

    models_dir = Path(os.environ["EDGELLM_MODELS_DIR"])
    cid = ModelStore(models_dir).manifest(MODEL_ID).weights_cid
    token = RayToken.generate().value
    head = ClusterManager(work_dir, models_dir, max_batch=CONCURRENT)
    peers = [ClusterManager(work_dir, models_dir) for _ in range(2)]
    try:
        address = head.start_head("bench", "127.0.0.1", token).node.address
        for i, peer in enumerate(peers):
            peer.join("bench", address, token, f"peer:p{i}", "127.0.0.1")
        total = 30
        plan = Plan(
            "bench",
            (
                PlanStage("peer:p0", LayerRange(0, SPLIT), cid),
                PlanStage("peer:p1", LayerRange(SPLIT, total), cid),
            ),
        )
        engine = head.engine(plan, MODEL_ID, store_dir, total)
        print(json.dumps(measure(engine, "pipeline_batch_throughput_ratio")), flush=True)
    finally:
        # The head first, as a requester's teardown does: its engine waits for the stages'
        # block stores while their peers' nodes are still up.
        for manager in (head, *peers):
            manager.close()
    return 0


def ray_figures(store_dir: Path) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise RuntimeError("the Ray part needs a loopback-only network namespace (root, iproute2)")
    work_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgellm-batch-bench-{os.getpid()}"
    work_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(IN_NETNS), sys.executable, __file__, "--ray", str(store_dir), str(work_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        timeout=RAY_TIMEOUT_S,
        check=True,
    )
    shutil.rmtree(work_dir, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("the Ray part printed no figures")
    return json.loads(lines[-1])


def figures(store_dir: Path) -> dict[str, Any]:
    return {**local_figures(store_dir), **ray_figures(store_dir)}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--ray":
        sys.exit(ray_main(Path(sys.argv[2]), Path(sys.argv[3])))
    sys.exit(f"usage: {sys.argv[0]} --ray STORE_DIR WORK_DIR (run by bench/run.py batch)")
