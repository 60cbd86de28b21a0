"""Chained block keys: equal prefixes give equal keys, any change gives other keys.

    h_0 = 32 zero bytes (ROOT)
    h_i = sha256(h_{i-1} ‖ u16be(len(cid)) ‖ cid ‖ u16be(len(dtype)) ‖ dtype
                 ‖ u32be(block_size) ‖ u32be(t) for each token id t of block i)

`cid` is the model's weights CID and `dtype` the KV dtype name ("float32"), both UTF-8.
Only full blocks are keyed. Every stage of a model uses the same chain; the layer range
lives in the block's metadata and the store's index, not in the key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

ROOT = bytes(32)


@dataclass(frozen=True)
class ChainSpec:
    """What, besides the tokens, decides a block's K and V."""

    model_cid: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    block_size: int


def _short(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def block_key(parent: bytes, spec: ChainSpec, tokens: Sequence[int]) -> bytes:
    """The key of one full block, given the key of the block before it (ROOT for the first)."""
    if len(parent) != 32:
        raise ValueError("a parent key is 32 bytes")
    if len(tokens) != spec.block_size:
        raise ValueError(f"a block holds {spec.block_size} tokens, got {len(tokens)}")
    h = hashlib.sha256(parent)
    h.update(_short(spec.model_cid))
    h.update(_short(spec.dtype))
    h.update(struct.pack(f">I{len(tokens)}I", spec.block_size, *tokens))
    return h.digest()


def chain(spec: ChainSpec, token_ids: Sequence[int]) -> list[bytes]:
    """Keys of every full block of `token_ids`, in order."""
    keys: list[bytes] = []
    parent = ROOT
    size = spec.block_size
    for start in range(0, len(token_ids) - size + 1, size):
        parent = block_key(parent, spec, token_ids[start : start + size])
        keys.append(parent)
    return keys


def parent_of(keys: Sequence[bytes], index: int) -> bytes:
    return keys[index - 1] if index > 0 else ROOT
