"""Continuous batching in the torch engine: every sequence of a batch produces, greedily,
exactly the tokens transformers `generate` gives for its prompt alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.config import load_config
from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.types import FinishReason, GenerationRequest, SamplingParams
from edgellm.errors import RequestCancelled
from edgellm.server.app import build
from edgellm.v1 import inference_pb2, inference_pb2_grpc
from tests.python.runs import Run, batched_steps, run_all

MAX_NEW = 16
LONG = " ".join(f"Item {i}: a red apple, a green pear and a yellow lemon." for i in range(6))
# Mixed prompt lengths (5 to ~170 tokens), chat template and raw.
PROMPTS = {
    "france": {"prompt": "What is the capital of France?"},
    "fib": {"raw_prompt": "def fibonacci(n):"},
    "count": {"raw_prompt": "1, 2, 3, 4,"},
    "story": {"raw_prompt": "Once upon a time, in a land far away, there lived a"},
    "long": {"prompt": LONG + "\nWhich fruit is yellow?"},
    "sea": {"prompt": "Write a haiku about the sea."},
}


def _request(name: str, max_tokens: int = MAX_NEW, **sampling) -> GenerationRequest:
    params = SamplingParams(max_tokens=max_tokens, **sampling)
    return GenerationRequest(name, sampling=params, **PROMPTS[name])


@pytest.fixture(scope="module")
def engine(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir, max_batch=8))


@pytest.fixture(scope="module")
def reference(store_dir: Path):
    return AutoModelForCausalLM.from_pretrained(store_dir).eval()


def _generate(reference, prompt_ids: Sequence[int], n: int) -> list[int]:
    ids = torch.tensor([list(prompt_ids)])
    out = reference.generate(
        ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
    )
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def expected(engine: TorchEngine, reference) -> dict[str, list[int]]:
    return {
        name: _generate(reference, engine.prepare(_request(name)).prompt_ids, MAX_NEW)
        for name in PROMPTS
    }


def test_concurrent_requests_match_generate(engine, expected) -> None:
    before = batched_steps(engine)
    runs = [Run(engine, _request(name)) for name in PROMPTS]
    run_all(runs)
    for run in runs:
        assert run.error is None
        assert run.tokens == expected[run.request.request_id], run.request.request_id
    assert batched_steps(engine) > before  # they did decode together
    assert max(engine.step_sizes) <= 8


def test_split_stages_batch_and_match_generate(store_dir: Path, expected) -> None:
    split = TorchEngine.load(EngineConfig(store_dir, max_batch=4), splits=[13])
    try:
        runs = [Run(split, _request(name)) for name in PROMPTS]
        run_all(runs)
        for run in runs:
            assert (run.error, run.tokens) == (None, expected[run.request.request_id])
        assert max(split.step_sizes) == 4  # six requests, four slots: two waited
        # Each says how large a batch it decoded in (Timings.max_batch, on the wire too).
        # The first four decode together; a late one may run alone at the end,
        # depending on when the others finish.
        sizes = [run.chunks[-1].timings.max_batch for run in runs]
        assert sizes.count(4) >= 4 and all(1 <= size <= 4 for size in sizes), sizes
    finally:
        split.close()


def test_arrivals_join_while_others_decode(engine, expected) -> None:
    first = Run(engine, _request("story"))
    first.start()
    first.started_decoding.wait(timeout=300)
    later = [Run(engine, _request(name)) for name in ("fib", "long", "france")]
    run_all(later)
    first.join(timeout=600)
    for run in [first, *later]:
        assert (run.error, run.tokens) == (None, expected[run.request.request_id])


def test_abort_leaves_the_others_unchanged(engine, expected) -> None:
    aborted = Run(engine, _request("count"), cancel_after=3)
    others = [Run(engine, _request(name)) for name in ("fib", "sea", "story")]
    run_all([aborted, *others])
    assert isinstance(aborted.error, RequestCancelled)
    assert aborted.tokens == expected["count"][:3]
    for run in others:
        assert (run.error, run.tokens) == (None, expected[run.request.request_id])


def test_stop_strings_and_sampling_per_sequence(engine) -> None:
    alone = "".join(c.text for c in engine.generate(_request("story")))
    stop = alone[len(alone) // 2 : len(alone) // 2 + 4]
    seeded = _request("sea", temperature=0.8, seed=7)
    seeded_alone = [t for c in engine.generate(seeded) for t in c.token_ids]
    runs = [
        Run(engine, _request("story", stop=(stop,))),
        Run(engine, seeded),
        Run(engine, _request("fib", max_tokens=5)),
        Run(engine, _request("long")),
    ]
    run_all(runs)
    stopped, sampled, short, _ = runs
    assert "".join(c.text for c in stopped.chunks) == alone[: alone.index(stop)]
    assert stopped.chunks[-1].finish_reason is FinishReason.STOP_STRING
    assert sampled.tokens == seeded_alone  # its own seed, whatever the batch around it
    assert len(short.tokens) == 5
    assert short.chunks[-1].finish_reason is FinishReason.LENGTH
    assert short.chunks[-1].usage.completion_tokens == 5


def test_requests_beyond_the_pool_wait_then_run(store_dir: Path, reference) -> None:
    """Two slots of 45 positions (kv_budget_mb 4): three short requests share two slots,
    and one longer than a slot waits for the batch to drain, runs alone, then the rest."""
    small = TorchEngine.load(EngineConfig(store_dir, max_batch=2, kv_budget_mb=4))
    try:
        assert (small.pipeline.slots.count, small.pipeline.slots.positions) == (2, 45)
        names = ["fib", "count", "long", "story"]
        assert len(small.prepare(_request("long")).prompt_ids) + MAX_NEW > 45
        runs = [Run(small, _request(name)) for name in names]
        run_all(runs)
        for run in runs:
            ids = small.prepare(run.request).prompt_ids
            assert run.error is None
            assert run.tokens == _generate(reference, ids, MAX_NEW), run.request.request_id
        assert max(small.step_sizes) == 2
    finally:
        small.close()


def test_batched_logits_differ_from_lone_ones_only_in_the_last_bits(engine) -> None:
    """Why the token checks above can pass without bit-exact logits, shown on the logits:
    attention runs per sequence (exact), but the dense layers' GEMM over the batch's rows
    sums in another order than one row's GEMV. The differences are ~1e-5, far below the
    gap between the top two logits of these prompts, so greedy tokens agree; a prompt
    whose top two logits were that close could flip (none of the tests' prompts is)."""
    pipeline = engine.pipeline
    names = list(PROMPTS)[:4]
    prompts = [engine.prepare(_request(name)).prompt_ids for name in names]
    batched = [pipeline.session(200) for _ in prompts]
    lone = [pipeline.session(200) for _ in prompts]
    try:
        with torch.inference_mode():
            firsts = []
            for a, b, ids in zip(batched, lone, prompts, strict=True):
                la, lb = a.forward(torch.tensor([ids])), b.forward(torch.tensor([ids]))
                assert torch.equal(la, lb)  # a prefill is a lone sequence's own path
                firsts.append(int(la.argmax()))
            step = torch.tensor([[t] for t in firsts])
            together = pipeline.forward_batch(batched, step)
            alone = torch.cat([s.forward(step[i : i + 1]) for i, s in enumerate(lone)])
        diff = (together - alone).abs().max().item()
        top2 = alone.topk(2, dim=-1).values
        margin = (top2[:, 0] - top2[:, 1]).min().item()
        assert diff < 1e-3, diff  # not bit-exact here (GEMM vs GEMV), but close
        assert margin > 10 * diff, (margin, diff)
        assert torch.equal(together.argmax(-1), alone.argmax(-1))
    finally:
        for session in batched + lone:
            session.close()


def test_concurrent_generate_rpcs_reach_one_batch(tmp_path: Path, models_dir, expected) -> None:
    """Generate RPCs at once, as the Go node sends them, decode together in the backend's
    engine (the gRPC service does not serialise them) and each equals generate."""
    config = load_config(overrides={"models_dir": models_dir, "calibrate": False}, env={})
    built = build(config, "cpu")
    socket = f"unix://{tmp_path}/b.sock"
    assert built.server.add_insecure_port(socket)
    built.server.start()
    results: dict[str, list[int]] = {}
    try:
        with grpc.insecure_channel(socket) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            def generate(name: str) -> None:
                request = inference_pb2.GenerateRequest(
                    model="smollm2-135m",
                    request_id=name,
                    sampling=inference_pb2.SamplingParams(max_tokens=MAX_NEW),
                    **PROMPTS[name],
                )
                replies = stub.Generate(request, timeout=300)
                results[name] = [t for r in replies for t in r.token_ids]

            names = ["fib", "count", "story", "france"]
            threads = [threading.Thread(target=generate, args=(n,)) for n in names]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=600)
        assert {n: results.get(n) for n in names} == {n: expected[n] for n in names}
        engine = built.models.get("smollm2-135m").engine
        assert batched_steps(engine) > 0
    finally:
        built.server.stop(None)
        built.models.unload("smollm2-135m")
        built.clusters.close()
