"""The preallocated KV cache: same contents as transformers' DynamicLayer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.cache_utils import DynamicLayer

from edgellm.engine.torch.kv_cache import PreallocatedCache, PreallocatedLayer

CONFIG = LlamaConfig(num_hidden_layers=2, num_key_value_heads=3, head_dim=8)


def _cache(capacity: int) -> PreallocatedCache:
    return PreallocatedCache(CONFIG, capacity, 3, 8, torch.float32, torch.device("cpu"))


def _steps(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(1, 3, n, 8, generator=g), torch.randn(1, 3, n, 8, generator=g))
        for n in lengths
    ]


def test_updates_match_dynamic_layer_and_grow_past_capacity() -> None:
    cache = _cache(6)
    ours, theirs = cache.layers[0], DynamicLayer()
    assert isinstance(ours, PreallocatedLayer)
    for k, v in _steps([4, 1, 1, 3, 1]):  # 10 positions: past the capacity of 6
        ok, ov = ours.update(k, v)
        tk, tv = theirs.update(k, v)
        assert torch.equal(ok, tk) and torch.equal(ov, tv)
    assert ours.get_seq_length() == theirs.get_seq_length() == 10
    with pytest.raises(ValueError, match="no single buffer"):
        cache.reserve(1)  # the grown layer left the shared buffer


def test_reserve_is_invisible_until_commit() -> None:
    cache = _cache(8)
    rows = cache.reserve(4)
    assert rows.shape == (4, 3, 4, 8)  # K and V of 2 layers
    for row in range(4):
        rows[row].fill_(float(row))
    assert cache.get_seq_length() == 0
    cache.commit(4)
    assert cache.get_seq_length() == 4
    layer = cache.layers[1]
    assert torch.equal(layer.keys, torch.full((1, 3, 4, 8), 2.0))
    assert torch.equal(layer.values, torch.full((1, 3, 4, 8), 3.0))
    ((k, v),) = _steps([2])
    keys, values = layer.update(k, v)
    assert torch.equal(keys[:, :, 4:], k) and torch.equal(
        values[:, :, :4], torch.full((1, 3, 4, 8), 3.0)
    )
    with pytest.raises(ValueError, match="exceed"):
        cache.reserve(5)


def test_crop_then_update_overwrites() -> None:
    layer = _cache(8).layers[0]
    first, second = _steps([5, 2], seed=1)
    layer.update(*first)
    layer.crop(-2)
    keys, _ = layer.update(*second)
    assert keys.shape[-2] == 5
    assert torch.equal(keys[:, :, :3], first[0][:, :, :3])
    assert torch.equal(keys[:, :, 3:], second[0])
