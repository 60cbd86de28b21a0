"""Figures for the torch engine, against plain transformers `generate` in the same run.

Decode speed is measured the same way for both: wall time of an N-token run minus a
1-token run (prefill + first token), over the N - 1 tokens between, median of a few
repetitions after a warm-up. Greedy outputs are identical, so both produce the same tokens.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from edgellm.engine.base import Engine, EngineConfig
from edgellm.engine.registry import engine_class
from edgellm.engine.types import GenerationRequest, SamplingParams

PROMPTS = [
    "Explain how a bicycle stays upright while moving.",
    "Write a short story about a lighthouse keeper.",
    "List three uses of copper and say why each works.",
]
MAX_TOKENS = 32
REPEATS = 3


def _engine_run(engine: Engine, prompt: str, max_tokens: int) -> tuple[float, int, float]:
    """(wall seconds, tokens produced, ttft ms) for one engine request."""
    request = GenerationRequest("bench", prompt=prompt, sampling=SamplingParams(max_tokens))
    start = time.perf_counter()
    chunks = list(engine.generate(request))
    return time.perf_counter() - start, len(chunks), chunks[-1].timings.ttft_ms


def _generate_run(model, ids: torch.Tensor, max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_tokens,
        )
    return time.perf_counter() - start, out.shape[1] - ids.shape[1]


def _decode_rate(run_n, run_1) -> float:
    """Tokens per second between the first and the last token."""
    (t_n, n), (t_1, _) = run_n, run_1
    return (n - 1) / (t_n - t_1) if n > 1 and t_n > t_1 else 0.0


def _median_rates(engine: Engine, model, prompt: str) -> tuple[float, float, float]:
    ids = torch.tensor([engine.prepare(GenerationRequest("x", prompt=prompt)).prompt_ids])
    engine_rates, generate_rates, ttfts = [], [], []
    for _ in range(REPEATS):
        e1 = _engine_run(engine, prompt, 1)
        en = _engine_run(engine, prompt, MAX_TOKENS)
        g1 = _generate_run(model, ids, 1)
        gn = _generate_run(model, ids, MAX_TOKENS)
        engine_rates.append(_decode_rate(en[:2], e1[:2]))
        generate_rates.append(_decode_rate(gn, g1))
        ttfts.append(en[2])
    return (
        statistics.median(engine_rates),
        statistics.median(generate_rates),
        statistics.median(ttfts),
    )


def figures(store_dir: Path) -> dict[str, Any]:
    engine = engine_class("torch").load(EngineConfig(store_dir))
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    _engine_run(engine, PROMPTS[0], 8)  # warm-up
    _generate_run(model, torch.tensor([[1, 2, 3, 4]]), 8)
    results = [_median_rates(engine, model, p) for p in PROMPTS]
    engine_tok_s = statistics.median(r[0] for r in results)
    generate_tok_s = statistics.median(r[1] for r in results)
    ratio = engine_tok_s / generate_tok_s if generate_tok_s else 0.0
    return {
        "engine_decode_ratio": {
            "value": ratio,
            "unit": "ratio",
            "baseline": generate_tok_s,
            "ratio": ratio,
            "engine_tok_s": engine_tok_s,
            "generate_tok_s": generate_tok_s,
            "max_tokens": MAX_TOKENS,
            "prompts": len(PROMPTS),
            "repeats": REPEATS,
        },
        "engine_ttft_ms": {
            "value": statistics.median(r[2] for r in results),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
        },
    }
