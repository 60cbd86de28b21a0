"""What a decode step of several sequences through a stage, each in its own pool slot,
needs of transformers (the step itself is `stage.forward_batch`).

The dense layers (projections, MLP, norms, LM head) run on the batch's rows at once,
which is where batching pays. Attention runs per sequence over its own slot's positions,
through the same SDPA call a lone sequence makes (no padding, no mask), so it is exactly
what that sequence would compute alone. What is not bit-exact is the dense matmul: a CPU
GEMM over b rows accumulates in another order than the GEMV of one row (measured: up to
~3e-5 apart on logits of magnitude ~20), so batched logits differ from a lone sequence's
in the last bits, and greedy tokens can differ only where the top two logits are that
close (tests/python/test_batch.py checks the tokens against `generate`).

The attention implementation `edgellm_slots` is registered with transformers: without
`edgellm_batch` in the call it is SDPA (prefill, a lone sequence), so a model built with it
computes what the default `sdpa` does, bit for bit; only a masked call on the CPU groups
grouped-query heads in torch's kernel instead of copying K/V per head (`_lone`).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

SLOTS_ATTENTION = "edgellm_slots"
# The model call's keyword for a batched step: [(slot, length)] per row (StageSession).
BATCH_KWARG = "edgellm_batch"


def _grouped_in_kernel(module, query: torch.Tensor, attention_mask, kwargs) -> bool:
    """Whether a masked call can leave grouped-query attention to torch's CPU kernel.

    With a mask (every chunk after cached positions: a prefix hit's rest, a spot check),
    transformers copies K/V once per query head (repeat_kv) before SDPA; torch's CPU kernel
    groups the heads itself (enable_gqa), bit-equal and without the copy: 13 tokens over
    1,581 cached ones copied 72 MB, ~9 ms. Transformers 5.19 has no switch for this (the
    TRANSFORMERS_SDPA_FORCE_GQA of earlier releases is gone), so the call is made here."""
    return (
        attention_mask is not None
        and query.device.type == "cpu"
        and getattr(module, "num_key_value_groups", 1) > 1
        and kwargs.get("position_bias") is None
        and kwargs.get("cache") is None
        and not kwargs.get("output_attentions", False)
    )


def _lone(module, query, key, value, attention_mask, **kwargs):
    """A lone sequence's attention: transformers' SDPA, as `sdpa` computes it."""
    if not _grouped_in_kernel(module, query, attention_mask, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def _attention(module, query, key, value, attention_mask, **kwargs):
    rows = kwargs.pop(BATCH_KWARG, None)
    if rows is None:
        return _lone(module, query, key, value, attention_mask, **kwargs)
    # key/value: the pool's whole layer [slots, kv_heads, positions, head_dim] (BatchCache).
    outs = [
        sdpa_attention_forward(
            module,
            query[i : i + 1],
            key[slot : slot + 1, :, :length],
            value[slot : slot + 1, :, :length],
            None,
            **kwargs,
        )[0]
        for i, (slot, length) in enumerate(rows)
    ]
    return torch.cat(outs), None


AttentionInterface.register(SLOTS_ATTENTION, _attention)
AttentionMaskInterface.register(SLOTS_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


class BatchCache:
    """past_key_values for one batched step: writes each row's new K/V at its sequence's
    position in its slot, and hands attention the pool's layer (no copy)."""

    def __init__(self, buffer: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor):
        self.buffer, self.slots, self.positions = buffer, slots, positions

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = self.buffer[layer_idx, 0], self.buffer[layer_idx, 1]
        keys[self.slots, :, self.positions] = key_states[:, :, 0]
        values[self.slots, :, self.positions] = value_states[:, :, 0]
        return keys, values
