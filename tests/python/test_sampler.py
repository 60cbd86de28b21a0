"""The sampler at the edges of its valid range."""

from __future__ import annotations

import pytest
import torch

from edgellm.engine.torch.sampler import Sampler
from edgellm.engine.types import SamplingParams


@pytest.mark.parametrize("temperature", [1e-40, 1e-30, 1e-8])
@pytest.mark.parametrize("top_p", [1.0, 5e-324, 0.5])
def test_tiny_temperature_is_argmax_not_nan(temperature, top_p):
    """A tiny temperature (valid: the range is [0, 2]) overflowed the top score to inf
    and the probabilities to NaN; it must pick the most likely token."""
    logits = torch.tensor([[1.0, 9.5, -3.0, 9.0, 0.0]])
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=3)
    assert Sampler(params, torch.device("cpu"))(logits) == 1


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, seed=11)
    draws = {Sampler(params, torch.device("cpu"))(logits) for _ in range(3)}
    assert len(draws) == 1
