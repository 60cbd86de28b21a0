"""What KV blocks need of one stage's cache, as a protocol: `kv` depends on no engine.

Blocks are exported from a stage's cache after a prefill and imported into a fresh one
before the next; `StageCache` is that much of a cache, and `KVLayout` says what its K/V
look like. `edgellm.engine.torch.stage.StageSession` satisfies it. The dependency goes one
way: an engine imports `kv`, `kv` never imports an engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from edgellm.kv.block import KV


@dataclass(frozen=True)
class KVLayout:
    """One stage's K/V: layers [layer_start, layer_end), each [kv_heads, n, head_dim]."""

    layer_start: int
    layer_end: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def of_config(cls, config, start: int, end: int, dtype: torch.dtype) -> KVLayout:
        """Layers [start, end) of the model a transformers `config` describes."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(start, end, kv_heads, head_dim, dtype)

    @property
    def layers(self) -> int:
        return self.layer_end - self.layer_start


class StageCache(Protocol):
    """One request's KV cache on one stage."""

    @property
    def kv_layout(self) -> KVLayout:
        """The stage's layers and K/V shapes."""

    @property
    def position(self) -> int:
        """Positions cached so far."""

    def export_kv(self, start: int, end: int) -> list[KV]:
        """K and V of positions [start, end) for each layer, in layer order: contiguous CPU
        copies shaped [kv_heads, end - start, head_dim]."""

    def reserve_kv(self, n: int) -> torch.Tensor:
        """A writable view [2 * layers, kv_heads, n, head_dim] of the next n positions'
        K and V (row 2i is layer i's K, 2i+1 its V), not cached until `commit_kv(n)`."""

    def commit_kv(self, n: int) -> None:
        """Make the n positions written through `reserve_kv` part of the cache."""
