"""Every supported architecture, split and whole, equals transformers' `generate`.

Each model is small, random and built here (tests/python/tiny_models.py), added to a
store the way `model add` adds a directory, and run by the torch engine in one stage
and in several; Gemma 3's splits cut between its sliding-window and global layers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.types import ChatMessage, GenerationRequest, SamplingParams
from edgellm.models.add import add_model
from edgellm.models.architectures import SUPPORTED
from edgellm.models.store import ModelStore
from tests.python.tiny_models import ARCHITECTURES, build, quiet

MAX_NEW = 16
PROMPTS = (
    GenerationRequest("raw", raw_prompt="The river carries sediment to the sea, " * 4),
    GenerationRequest("chat", messages=(ChatMessage("user", "Why is the sky blue?"),)),
)
SPLITS = (None, [2, 3])


def test_every_supported_architecture_is_tested() -> None:
    assert sorted(ARCHITECTURES) == sorted(SUPPORTED.values())


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, store_dir: Path) -> ModelStore:
    root = tmp_path_factory.mktemp("arch")
    store = ModelStore(root / "models")
    for name in ARCHITECTURES:
        add_model(store, build(name, root / name, store_dir), f"tiny-{name}", quiet)
    return store


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_split_and_whole_equal_generate(tiny_store: ModelStore, arch: str) -> None:
    """Alone, and both prompts at once in one batch (the batched step's dense layers go
    through oneDNN: engine/torch/dense.py), each equals `generate` for its prompt alone."""
    model_dir = tiny_store.path(f"tiny-{arch}")
    assert tiny_store.manifest(f"tiny-{arch}").architecture in SUPPORTED
    reference = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for splits in SPLITS:
        engine = TorchEngine.load(EngineConfig(model_dir, max_batch=len(PROMPTS)), splits=splits)
        expected = {}
        for prompt in PROMPTS:
            request = _request(prompt)
            ids = torch.tensor([engine.prepare(request).prompt_ids])
            expected[prompt.request_id] = reference.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=MAX_NEW,
                eos_token_id=sorted(engine.eos_ids),
            )[0, ids.shape[1] :].tolist()
            got = [t for chunk in engine.generate(request) for t in chunk.token_ids]
            assert got == expected[prompt.request_id], (arch, splits, prompt.request_id)
            assert len(set(got)) > 1  # a model that repeats one token proves little
        before = engine.step_sizes.get(len(PROMPTS), 0)
        assert _at_once(engine) == expected, (arch, splits, "batched")
        assert engine.step_sizes.get(len(PROMPTS), 0) > before  # they did decode together
        engine.close()


def _request(prompt: GenerationRequest) -> GenerationRequest:
    return GenerationRequest(
        prompt.request_id,
        messages=prompt.messages,
        raw_prompt=prompt.raw_prompt,
        sampling=SamplingParams(max_tokens=MAX_NEW),
    )


def _at_once(engine: TorchEngine) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}

    def run(prompt: GenerationRequest) -> None:
        got[prompt.request_id] = [t for c in engine.generate(_request(prompt)) for t in c.token_ids]

    threads = [threading.Thread(target=run, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got
