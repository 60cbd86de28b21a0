"""What travels between the prefill peer, the decode peer and the driver (through Ray,
so plain frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Handoff:
    """What P hands D: the manifest of the prompt's stored blocks (b"": none)."""

    manifest: bytes = b""
    store_ms: float = 0.0
    # Prompt tokens the manifest covers (whole blocks).
    tokens: int = 0
    warnings: tuple[str, ...] = ()
    # The new blocks' bytes by CID, handed over directly (None: fetch through IPFS): a
    # dict from an in-process actor; over Ray, a reference to one in the prefill peer's
    # object store, so that the driver, which sees every Handoff, never holds the bytes
    # (it drops the reference before keeping a handoff: handoffs.py).
    blocks: Any = None


@dataclass(frozen=True)
class Loaded:
    """What D did with a handoff."""

    # Prompt tokens whose K/V D took from P's blocks.
    cached_tokens: int = 0
    # Connect, fetch, verify and import (D's side).
    fetch_ms: float = 0.0
    # Storing the blocks (P's side, passed along).
    store_ms: float = 0.0
    # Prompt tokens D computed itself.
    computed_tokens: int = 0
    # float32 logits [1, vocab] of the prompt's last position when D computed it, else
    # None (the actor keeps them for take_logits; they do not travel back by default).
    logits: torch.Tensor | None = None
    warnings: tuple[str, ...] = ()
    # IPFS peer ids of the prefill peer when D's spot check of its blocks failed.
    dropped: tuple[str, ...] = ()
    # Block parts D took from the bytes P handed over directly (the rest came through
    # IPFS).
    direct_parts: int = 0
