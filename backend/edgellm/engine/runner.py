"""The stage-runner seam: what the decode loop (engine/torch/generation.py) drives.

An in-process chain of torch stages (`Pipeline`), a chain of stage actors on other peers
(`edgellm.cluster.pipeline.RayPipeline`) and a prefill/decode pair of them
(`edgellm.cluster.disaggregated.driver.DisaggregatedRunner`) all satisfy it, so one loop,
sampler and detokenizer serve local and distributed generation. An engine runs over a
runner through `Engine.over`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class KVStats:
    """Prompt KV a session did not compute where it decodes: taken from cached blocks, or
    handed over by another peer (P/D). Reported in the request's final usage and timings."""

    cached_tokens: int = 0  # prompt tokens whose K/V came from blocks
    fetch_ms: float = 0.0  # fetch, verify and import of those blocks
    store_ms: float = 0.0  # storing the prompt's blocks (P/D: on the prefill peer)
    # IPFS peer ids whose blocks failed the decode peer's spot check (P/D: the prefill
    # peer's), and the peer ids of the workers that handed them over.
    dropped: tuple[str, ...] = ()
    dropped_workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slots:
    """A runner's slot pool: how many sequences decode together, and how many positions
    (prompt + completion) each may hold. A longer request gets a cache of its own and
    runs alone (the batcher waits for the batch to drain first)."""

    count: int
    positions: int


class RunnerSession(Protocol):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [1, n] -> float32 logits [1, vocab] of the last position."""

    def kv_stats(self) -> KVStats:
        """What this session's stages took over instead of computing (zeros for a runner
        that computes every position itself); read once the last token is sampled."""

    def close(self) -> None:
        """Free this request's state (KV caches) on every stage."""


@runtime_checkable
class PrefixLoading(Protocol):
    """A session whose stages load a prompt's cached KV blocks themselves, on their own
    peers (edgellm.cluster.stage_prefix), rather than through the engine's prefix cache."""

    def load_prefix(self, prompt_ids: Sequence[int], manifest: bytes) -> tuple[int, float]:
        """Fill the stages with the prompt's cached leading blocks; (tokens, ms)."""

    def prefill_cached(self) -> tuple[torch.Tensor | None, tuple[str, ...]]:
        """After `load_prefix` took some tokens: the rest of the prompt with one cached
        position spot-checked (edgellm.kv.spot). (The last position's logits, ()), or
        (None, the holders dropped) when the check failed and the stages were emptied:
        the caller computes the whole prompt."""


class StageRunner(Protocol):
    @property
    def device(self) -> torch.device:
        """Where token ids and logits live on the driver's side."""

    @property
    def slots(self) -> Slots:
        """The slot pool every stage of this runner holds."""

    def session(self, max_positions: int) -> RunnerSession:
        """State for one request of at most `max_positions` tokens (a pool slot when it
        fits in one and one is free, else a cache of its own)."""

    def forward_batch(
        self, sessions: Sequence[RunnerSession], input_ids: torch.Tensor
    ) -> torch.Tensor:
        """One decode step of several sessions of this runner at once: token ids [b, 1],
        row i for sessions[i] -> float32 logits [b, vocab]."""

    def close(self) -> None:
        """Release every stage; the runner is unusable afterwards."""
