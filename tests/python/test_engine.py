"""The torch engine against transformers' own generate, the correctness oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationRequest,
    SamplingParams,
)
from edgellm.errors import InvalidRequest, RequestCancelled

LONG_TEXT = " ".join(
    f"Paragraph {i}: the river carries sediment from the mountains to the sea, and the delta "
    f"grows by a few metres every year while farmers plant rice on the new land."
    for i in range(20)
)
PROMPTS = [
    GenerationRequest("a", prompt="What is the capital of France?"),
    GenerationRequest("b", prompt="Write a haiku about the sea."),
    GenerationRequest("c", raw_prompt="def fibonacci(n):"),
    GenerationRequest(
        "d",
        messages=(
            ChatMessage("system", "You answer in one short sentence."),
            ChatMessage("user", "Why is the sky blue?"),
        ),
    ),
    GenerationRequest("e", prompt=LONG_TEXT + "\n\nSummarise the text above."),
]
MAX_NEW = 24


@pytest.fixture(scope="module")
def engine(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir))


@pytest.fixture(scope="module")
def split_engine(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir), splits=[13])


@pytest.fixture(scope="module")
def reference(store_dir: Path):
    return AutoModelForCausalLM.from_pretrained(store_dir).eval()


def _with(request: GenerationRequest, **sampling) -> GenerationRequest:
    params = {"max_tokens": MAX_NEW, **sampling}
    return GenerationRequest(
        request.request_id,
        request.prompt,
        request.messages,
        request.raw_prompt,
        SamplingParams(**params),
    )


def _tokens(engine: TorchEngine, request: GenerationRequest) -> list[int]:
    return [t for chunk in engine.generate(request) for t in chunk.token_ids]


@pytest.fixture(scope="module")
def expected(engine: TorchEngine, reference) -> dict[str, list[int]]:
    out = {}
    for request in PROMPTS:
        ids = torch.tensor([engine.prepare(_with(request)).prompt_ids])
        generated = reference.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=MAX_NEW,
        )
        out[request.request_id] = generated[0, ids.shape[1] :].tolist()
    return out


def test_long_prompt_is_long(engine: TorchEngine) -> None:
    assert len(engine.prepare(_with(PROMPTS[-1])).prompt_ids) > 500


@pytest.mark.parametrize("request_", PROMPTS, ids=lambda r: r.request_id)
def test_greedy_matches_generate(engine, expected, request_) -> None:
    assert _tokens(engine, _with(request_)) == expected[request_.request_id]


@pytest.mark.parametrize("request_", PROMPTS, ids=lambda r: r.request_id)
def test_split_stages_match_generate(split_engine, expected, request_) -> None:
    assert [s.layers for s in split_engine.pipeline.stages][1].start == 13
    assert _tokens(split_engine, _with(request_)) == expected[request_.request_id]


def test_capital_of_france(engine: TorchEngine) -> None:
    chunks = list(engine.generate(_with(PROMPTS[0])))
    assert "".join(c.text for c in chunks) == "The capital of France is Paris."
    last = chunks[-1]
    assert last.finish_reason is FinishReason.STOP
    assert last.usage.completion_tokens == len(chunks)
    assert last.timings.ttft_ms > 0 and last.timings.decode_tokens_per_s > 0


def test_sampling_is_reproducible_per_seed(engine: TorchEngine) -> None:
    request = PROMPTS[1]
    first = _tokens(engine, _with(request, temperature=1.0, top_p=0.95, top_k=50, seed=7))
    again = _tokens(engine, _with(request, temperature=1.0, top_p=0.95, top_k=50, seed=7))
    others = [
        _tokens(engine, _with(request, temperature=1.0, top_p=0.95, top_k=50, seed=s))
        for s in (8, 9)
    ]
    assert first == again
    assert any(other != first for other in others)


def test_stop_string_cuts_text_before_it(engine: TorchEngine) -> None:
    chunks = list(engine.generate(_with(PROMPTS[0], stop=("Paris",))))
    assert "".join(c.text for c in chunks) == "The capital of France is "
    assert chunks[-1].finish_reason is FinishReason.STOP_STRING


def test_stop_string_never_emitted_partially(engine: TorchEngine) -> None:
    # "is Par" is a prefix of the stop string until "ris" arrives; none of it may leak.
    chunks = list(engine.generate(_with(PROMPTS[0], stop=("is Paris",))))
    assert "".join(c.text for c in chunks) == "The capital of France "
    assert all("is" not in c.text for c in chunks[4:])


def test_max_tokens_gives_length(engine: TorchEngine) -> None:
    chunks = list(engine.generate(_with(PROMPTS[1], max_tokens=3)))
    assert len(chunks) == 3
    assert chunks[-1].finish_reason is FinishReason.LENGTH


def test_chat_template_applied_to_prompt(engine: TorchEngine) -> None:
    ids = engine.prepare(_with(PROMPTS[0])).prompt_ids
    text = engine.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>assistant\n")
    raw = engine.prepare(GenerationRequest("r", raw_prompt="hello")).prompt_ids
    assert engine.tokenizer.decode(raw) == "hello"


def test_cancel_stops_generation(engine: TorchEngine) -> None:
    import threading

    cancel = threading.Event()
    stream = engine.generate(_with(PROMPTS[2], max_tokens=50), cancel)
    next(stream)
    cancel.set()
    with pytest.raises(RequestCancelled):
        next(stream)


BAD = [
    ({"prompt": "   "}, {}, "prompt must not be empty"),
    ({"prompt": ""}, {}, "prompt must not be empty"),
    ({"prompt": "hi"}, {"max_tokens": 0}, "max_tokens must be between 1 and"),
    ({"prompt": "hi"}, {"max_tokens": -5}, "got -5"),
    ({"prompt": "hi"}, {"max_tokens": 9000}, "got 9000"),
    ({"prompt": "hi"}, {"temperature": 2.5}, "temperature must be between 0 and 2"),
    ({"prompt": "hi"}, {"temperature": -0.1}, "temperature"),
    ({"prompt": "hi"}, {"top_p": 0.0}, "top_p must be in (0, 1]"),
    ({"prompt": "hi"}, {"top_p": 1.5}, "top_p"),
    ({"prompt": "hi"}, {"top_k": -1}, "top_k"),
    ({"prompt": "hi"}, {"stop": ("",)}, "stop[0] must not be an empty string"),
    ({"raw_prompt": "word " * 9000}, {}, "context window of 8192"),
    ({"messages": (ChatMessage("robot", "hi"),)}, {}, "messages[0].role"),
]


@pytest.mark.parametrize(("inputs", "sampling", "message"), BAD)
def test_bad_input_is_invalid_request(engine, inputs, sampling, message) -> None:
    with pytest.raises(InvalidRequest, match=None) as info:
        engine.generate(GenerationRequest("x", sampling=SamplingParams(**sampling), **inputs))
    assert message in str(info.value)


def test_max_tokens_message_states_the_numbers(engine: TorchEngine) -> None:
    request = _with(PROMPTS[0], max_tokens=0)
    prompt_tokens = len(engine.prepare(_with(PROMPTS[0])).prompt_ids)
    with pytest.raises(InvalidRequest) as info:
        engine.generate(request)
    room = engine.context_length - prompt_tokens
    assert str(info.value) == f"max_tokens must be between 1 and {room} for this prompt, got 0"


def test_default_max_tokens_is_clamped_to_the_window(engine: TorchEngine) -> None:
    text = "word " * 8100
    job = engine.prepare(GenerationRequest("x", raw_prompt=text))
    assert job.max_tokens == min(256, engine.context_length - len(job.prompt_ids))
    assert job.max_tokens < 256


def test_resume_continues_the_greedy_answer(engine: TorchEngine, expected) -> None:
    """Engine.resume after a failover: the tokens already produced are not streamed
    again, the rest equals the uninterrupted answer, and usage counts the whole answer."""
    request, full = _with(PROMPTS[0], max_tokens=6), expected["a"][:6]
    prompt_tokens = len(engine.prepare(request).prompt_ids)
    chunks = list(engine.resume(request, full[:2]))
    assert [t for c in chunks for t in c.token_ids] == full[2:]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        prompt_tokens,
        6,
    )
    (done,) = engine.resume(request, full)  # the whole budget was produced already
    assert (done.token_ids, done.finish_reason) == ((), FinishReason.LENGTH)
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        engine.resume(request, [engine.vocab_size])


def test_load_encoder_tokenizes_as_the_loaded_engine(engine: TorchEngine, store_dir) -> None:
    encoder = TorchEngine.load_encoder(store_dir)
    for request in PROMPTS:
        assert encoder.encode(request) == engine.encode(request)
