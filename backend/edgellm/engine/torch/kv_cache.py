"""A KV cache allocated once per request instead of grown per step.

transformers' `DynamicLayer` appends with `torch.cat`, which copies a layer's whole cache on
every forward: at a 1,500-token context that is ~73 MB per step for SmolLM2-135M, as much
as the step's own arithmetic on a CPU. `PreallocatedCache` holds one buffer for every
layer's K and V over the request's positions (prompt + max tokens, known up front) and each
`PreallocatedLayer` writes its step in place; `keys`/`values` are views of the filled part,
so the rest of transformers (mask sizes, sequence length, crop) works as on a DynamicLayer.
The values are the same, so the tokens are the same as with a DynamicCache.

Because all layers share one buffer, `reserve`/`commit` give the prefix cache a single
[2 * layers, kv_heads, n, head_dim] view to copy fetched blocks into, one copy per block.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """`keys`/`values`: this layer's buffers, [batch, kv_heads, capacity, head_dim]."""
        super().__init__()
        self._k, self._v = keys, values
        self.shared = True  # still the buffers it was given (not grown)
        self.dtype, self.device = keys.dtype, keys.device
        self.keys, self.values = keys[:, :, :0], values[:, :, :0]
        self.is_initialized = True

    @property
    def capacity(self) -> int:
        return self._k.shape[-2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated up front

    def _grow(self, needed: int) -> None:
        """More positions than planned (a caller that under-sized the session): double,
        into buffers of its own."""
        length = self.get_seq_length()
        shape = list(self._k.shape)
        shape[-2] = max(needed, 2 * self.capacity)
        k, v = self._k.new_empty(shape), self._v.new_empty(shape)
        k[:, :, :length].copy_(self.keys)
        v[:, :, :length].copy_(self.values)
        self._k, self._v, self.shared = k, v, False
        self.keys, self.values = k[:, :, :length], v[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if end > self.capacity:
            self._grow(end)
        self._k[:, :, start:end].copy_(key_states)
        self._v[:, :, start:end].copy_(value_states)
        return self.commit_to(end)

    def commit_to(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]

    def reset(self) -> None:
        self.commit_to(0)


class PreallocatedCache(DynamicCache):
    """A DynamicCache whose layers write into one buffer sized for `capacity` positions.
    Models with other layer kinds (sliding window, shared KV, ...) keep transformers'
    layers; `reserve` then refuses, and the caller computes instead of importing."""

    def __init__(
        self,
        config,
        capacity: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        buffer: torch.Tensor | None = None,
    ) -> None:
        """`buffer`: [layers, 2, 1, kv_heads, capacity, head_dim] to write into (a slot of
        a `SlotPool`), instead of one allocated here."""
        super().__init__(config=config)
        self.buffer: torch.Tensor | None = None
        self._external = False
        if not self.layers or any(type(layer) is not DynamicLayer for layer in self.layers):
            return
        shape = (len(self.layers), 2, 1, kv_heads, capacity, head_dim)
        self._external = buffer is not None
        if buffer is None:
            buffer = torch.empty(shape, dtype=dtype, device=device)
        elif tuple(buffer.shape) != shape:
            raise ValueError(f"slot buffer shaped {tuple(buffer.shape)}, expected {shape}")
        self.buffer = buffer
        self.layers = [PreallocatedLayer(kv[0], kv[1]) for kv in self.buffer]

    @property
    def pooled(self) -> bool:
        """Still writing into the slot buffer it was given (not grown out of it)."""
        return self._external and all(layer.shared for layer in self.layers)

    def reserve(self, n: int) -> torch.Tensor:
        """A writable view [2 * layers, kv_heads, n, head_dim] (row 2l is layer l's K, 2l+1
        its V) of the next n positions, not part of the cache until `commit(n)`."""
        if self.buffer is None or not all(layer.shared for layer in self.layers):
            raise ValueError("this cache has no single buffer to import into")
        start = self.get_seq_length()
        if start + n > self.buffer.shape[-2]:
            raise ValueError(
                f"{n} positions from {start} exceed the cache's {self.buffer.shape[-2]}"
            )
        return self.buffer[:, :, 0, :, start : start + n].flatten(0, 1)

    def commit(self, n: int) -> None:
        end = self.get_seq_length() + n
        for layer in self.layers:
            layer.commit_to(end)
