"""The slot pool: KV memory for the sequences a stage decodes together.

One buffer [layers, 2, slots, kv_heads, positions, head_dim], allocated on first use. A
sequence takes a slot (its `PreallocatedCache` is a view of that slot, so the prefix cache
imports into and exports from it as before) and gives it back when it ends. As every slot
lives in one buffer, a batched decode step (batch.py) writes each sequence's new K/V in
place and attends over its own slot without copying.

The pool is sized from the configured budget (`backend.max_batch`, `backend.kv_budget_mb`)
for the whole model's layers, so every stage of a split holds the same slots: a stage with
a third of the layers uses a third of the budget.
"""

from __future__ import annotations

import threading

import torch

from edgellm.engine.runner import Slots
from edgellm.errors import InvalidRequest
from edgellm.kv.stage import KVLayout


def _element_size(config) -> int:
    dtype = getattr(config, "dtype", None) or torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.empty((), dtype=dtype).element_size()


def slots_for(config, max_batch: int, kv_budget_mb: int) -> Slots:
    """`max_batch` slots sharing `kv_budget_mb` of KV for the model `config` describes."""
    if max_batch < 1 or kv_budget_mb < 1:
        raise InvalidRequest("max_batch and kv_budget_mb must be at least 1")
    lay = KVLayout.of_config(config, 0, config.num_hidden_layers, torch.float32)
    per_position = lay.layers * 2 * lay.kv_heads * lay.head_dim * _element_size(config)
    positions = kv_budget_mb * 2**20 // (max_batch * per_position)
    return Slots(max_batch, max(1, min(positions, config.max_position_embeddings)))


# A stage loaded without a batching config (a P/D actor, a test's stage): one pooled
# sequence in 64 MB; others get caches of their own, as before the pool existed.
UNCONFIGURED_BATCH, UNCONFIGURED_KV_MB = 1, 64


class SlotPool:
    def __init__(
        self,
        slots: Slots,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.slots = slots
        self._shape = (layers, 2, slots.count, kv_heads, slots.positions, head_dim)
        self._dtype, self._device = dtype, device
        self._free = list(range(slots.count))
        self._lock = threading.Lock()
        self.buffer: torch.Tensor | None = None

    def acquire(self, positions: int) -> int | None:
        """A free slot for a sequence of `positions`, or None (too long, or none free)."""
        if positions > self.slots.positions:
            return None
        with self._lock:
            if not self._free:
                return None
            if self.buffer is None:
                self.buffer = torch.empty(self._shape, dtype=self._dtype, device=self._device)
            return self._free.pop(0)

    def view(self, slot: int) -> torch.Tensor:
        """Slot `slot`'s part of the buffer: [layers, 2, 1, kv_heads, positions, head_dim]."""
        assert self.buffer is not None
        return self.buffer[:, :, slot : slot + 1]

    def release(self, slot: int) -> None:
        with self._lock:
            if slot not in self._free:
                self._free.append(slot)
                self._free.sort()  # low slots first
