"""What a decode step of several sequences through a stage, each in its own pool slot,
needs of transformers (the step itself is `stage.forward_batch`).

The dense layers (projections, MLP, norms, LM head) run on the batch's rows at once,
which is where batching pays. Attention runs as one SDPA call for the batch: each row's
query over its own slot's positions, gathered from the pool and padded to the longest
row, with a mask that hides the padding. Neither is bit-exact with a lone sequence:

- the dense matmul: a CPU GEMM over b rows accumulates in another order than the GEMV of
  one row (measured: up to ~3e-5 apart on logits of magnitude ~20);
- the masked attention: the kernel sums a row's positions in blocks of the padded length,
  not its own (measured: up to ~5e-7 apart on attention outputs, a hundredth of the
  above). It replaced one SDPA call per row and layer (exact, but 8 rows x 30 layers of
  kernel launches per step cost about three times the attention itself).

So batched logits differ from a lone sequence's in the last bits, and greedy tokens can
differ only where the top two logits are that close (tests/python/test_batch.py and the
Ray and swarm tests check the tokens against `generate`).

The attention implementation `edgellm_slots` is registered with transformers: without
`edgellm_batch` in the call it is plain SDPA (prefill, a lone sequence), so a model built
with it computes what the default `sdpa` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.functional import scaled_dot_product_attention
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import (
    repeat_kv,
    sdpa_attention_forward,
    use_gqa_in_sdpa,
)
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

SLOTS_ATTENTION = "edgellm_slots"
# The model call's keyword for a batched step: its Rows (StageSession).
BATCH_KWARG = "edgellm_batch"


@dataclass(frozen=True)
class Rows:
    """The rows of one batched step, built once for all its layers: each row's pool slot
    and length (its positions so far and this step's)."""

    slots: tuple[int, ...]
    lengths: tuple[int, ...]
    index: torch.Tensor  # the slots, to gather the rows' K/V from the pool
    mask: torch.Tensor  # [rows, 1, 1, longest] bool: True on a row's own positions

    @classmethod
    def of(cls, slots: list[int], lengths: list[int], device: torch.device) -> Rows:
        longest = max(lengths)
        own = torch.arange(longest, device=device)[None, :] < torch.tensor(
            lengths, device=device
        ).unsqueeze(1)
        return cls(
            tuple(slots),
            tuple(lengths),
            torch.tensor(slots, device=device),
            own[:, None, None, :],
        )


def _attention(module, query, key, value, attention_mask, **kwargs):
    rows: Rows | None = kwargs.pop(BATCH_KWARG, None)
    if rows is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # key/value: the pool's whole layer [slots, kv_heads, positions, head_dim] (BatchCache).
    if kwargs.get("position_bias") is not None or kwargs.get("output_attentions"):
        outs = [  # what the model's own attention needs, one row at a time
            sdpa_attention_forward(
                module,
                query[i : i + 1],
                key[slot : slot + 1, :, :length],
                value[slot : slot + 1, :, :length],
                None,
                **kwargs,
            )[0]
            for i, (slot, length) in enumerate(zip(rows.slots, rows.lengths, strict=True))
        ]
        return torch.cat(outs), None
    return _masked_sdpa(module, query, key, value, rows, kwargs), None


def _masked_sdpa(module, query, key, value, rows: Rows, kwargs) -> torch.Tensor:
    """One SDPA call for every row: query [rows, heads, 1, head_dim] over the rows' slots,
    padded to the longest and masked -> [rows, 1, heads, head_dim], as
    `sdpa_attention_forward` returns it."""
    longest = rows.mask.shape[-1]
    keys = key[:, :, :longest].index_select(0, rows.index)
    values = value[:, :, :longest].index_select(0, rows.index)
    groups = getattr(module, "num_key_value_groups", 1)
    gqa = groups > 1 and use_gqa_in_sdpa(None, keys, values)
    if groups > 1 and not gqa:
        keys, values = repeat_kv(keys, groups), repeat_kv(values, groups)
    out = scaled_dot_product_attention(
        query,
        keys,
        values,
        attn_mask=rows.mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        enable_gqa=gqa,
    )
    return out.transpose(1, 2).contiguous()


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
