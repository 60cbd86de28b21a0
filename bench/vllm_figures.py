"""Figures for the vllm engine against the torch engine, in the same run.

- vllm_decode_ratio: single-request decode tokens/s, measured as engine_figures does
  (an N-token run minus a 1-token run, median over prompts and repeats).
- vllm_batch_throughput_ratio: total tokens/s with CONCURRENT requests at once, each
  both engines batching them (backend.max_batch sequences at once), over the torch
  engine's.
Per-request latencies of the concurrent runs come with p50/p95/p99.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine_figures import MAX_TOKENS, PROMPTS, REPEATS, _decode_rate, _engine_run

from edgellm.engine.base import Engine, EngineConfig
from edgellm.engine.registry import engine_class
from edgellm.engine.types import GenerationRequest, SamplingParams

CONCURRENT = 8
BATCH_MAX_TOKENS = 32


def _single_decode(engine: Engine) -> float:
    rates = []
    for prompt in PROMPTS:
        for _ in range(REPEATS):
            one = _engine_run(engine, prompt, 1)
            full = _engine_run(engine, prompt, MAX_TOKENS)
            rates.append(_decode_rate(full[:2], one[:2]))
    return statistics.median(rates)


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99)}


def _concurrent(engine: Engine) -> dict[str, Any]:
    """CONCURRENT requests at once, as serve hands them to the backend."""
    # EOS ignored would need engine support; prompts are long-answer ones instead, and
    # the tokens actually produced are what is counted.
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(CONCURRENT)]

    def one(i: int) -> tuple[int, float]:
        request = GenerationRequest(
            f"batch-{i}", prompt=prompts[i], sampling=SamplingParams(BATCH_MAX_TOKENS)
        )
        start = time.perf_counter()
        chunks = list(engine.generate(request))
        return len(chunks), time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(one, range(CONCURRENT)))
    wall = time.perf_counter() - start
    tokens = sum(n for n, _ in results)
    return {
        "tok_s": tokens / wall,
        "tokens": tokens,
        "wall_s": wall,
        "latency_s": _percentiles([s for _, s in results]),
    }


def _measure(name: str, store_dir: Path) -> tuple[float, dict[str, Any]]:
    engine = engine_class(name).load(EngineConfig(store_dir))
    try:
        _engine_run(engine, PROMPTS[0], 8)  # warm-up
        return _single_decode(engine), _concurrent(engine)
    finally:
        engine.close()


def figures(store_dir: Path) -> dict[str, Any]:
    torch_decode, torch_batch = _measure("torch", store_dir)
    vllm_decode, vllm_batch = _measure("vllm", store_dir)
    decode_ratio = vllm_decode / torch_decode if torch_decode else 0.0
    batch_ratio = vllm_batch["tok_s"] / torch_batch["tok_s"] if torch_batch["tok_s"] else 0.0
    return {
        "vllm_decode_ratio": {
            "value": decode_ratio,
            "unit": "ratio",
            "baseline": torch_decode,
            "ratio": decode_ratio,
            "goal": 1.0,
            "vllm_tok_s": vllm_decode,
            "torch_tok_s": torch_decode,
            "max_tokens": MAX_TOKENS,
            "prompts": len(PROMPTS),
            "repeats": REPEATS,
        },
        "vllm_batch_throughput_ratio": {
            "value": batch_ratio,
            "unit": "ratio",
            "baseline": torch_batch["tok_s"],
            "ratio": batch_ratio,
            "concurrent": CONCURRENT,
            "max_tokens": BATCH_MAX_TOKENS,
            "vllm": vllm_batch,
            "torch": torch_batch,
        },
    }
