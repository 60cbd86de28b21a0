"""The stages' attention (engine/torch/batch.py): a chunk after cached positions attends
with a mask, and torch's CPU kernel groups the query heads itself instead of transformers
copying K/V once per query head; the logits stay bit-equal to transformers' own SDPA."""

from __future__ import annotations

import pytest
import torch
import transformers.integrations.sdpa_attention as transformers_sdpa

from edgellm.engine.torch import batch
from edgellm.engine.torch.pipeline import Pipeline

PROMPT = list(range(1000, 1200))
REST = 13  # the tokens computed over the cached ones, as after a prefix-cache hit


def _rest_logits(pipeline: Pipeline) -> torch.Tensor:
    """The last position's logits of the prompt's last REST tokens over the others'."""
    session = pipeline.session(len(PROMPT) + 1)
    with torch.inference_mode():
        session.forward(torch.tensor([PROMPT[:-REST]]))
        logits = session.forward(torch.tensor([PROMPT[-REST:]]))[0]
    for stage_session in session.sessions:
        stage_session.close()
    return logits


def _refuse_copies(*args, **kwargs):
    raise AssertionError("K/V copied once per query head (repeat_kv)")


@pytest.mark.parametrize("splits", [None, [13]])
def test_masked_chunk_groups_heads_in_the_kernel(store_dir, monkeypatch, splits) -> None:
    pipeline = Pipeline.load(store_dir, splits)
    config = pipeline.stages[0].config
    assert config.num_key_value_heads < config.num_attention_heads  # grouped-query

    with monkeypatch.context() as transformers_way:
        transformers_way.setattr(batch, "_grouped_in_kernel", lambda *args: False)
        expected = _rest_logits(pipeline)  # transformers' SDPA: repeat_kv, then the kernel
    monkeypatch.setattr(transformers_sdpa, "repeat_kv", _refuse_copies)
    assert torch.equal(_rest_logits(pipeline), expected)
