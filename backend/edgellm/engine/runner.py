"""The stage-runner seam: what the decode loop (engine/torch/generation.py) drives.

An in-process chain of torch stages (`Pipeline`) and a chain of stage actors on other
peers (`edgellm.cluster.pipeline.RayPipeline`) both satisfy it, so one loop, sampler and
detokenizer serve local and distributed generation.
"""

from __future__ import annotations

from typing import Protocol

import torch


class RunnerSession(Protocol):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [1, n] -> float32 logits [1, vocab] of the last position."""

    def close(self) -> None:
        """Free this request's state (KV caches) on every stage."""


class StageRunner(Protocol):
    @property
    def device(self) -> torch.device:
        """Where token ids and logits live on the driver's side."""

    def session(self, max_positions: int) -> RunnerSession:
        """State for one request of at most `max_positions` tokens."""

    def close(self) -> None:
        """Release every stage; the runner is unusable afterwards."""
