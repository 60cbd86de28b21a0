"""A chain of stages that together cover all layers, run in this process (a StageRunner)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import torch
from transformers import AutoConfig

from edgellm.engine.runner import KVStats, Slots
from edgellm.engine.torch.stage import LayerRange, Stage, StageSession, forward_batch
from edgellm.errors import InvalidRequest


class Pipeline:
    def __init__(self, stages: list[Stage]) -> None:
        expected = 0
        for stage in stages:
            if stage.layers.start != expected:
                raise InvalidRequest(
                    f"stage layers must be contiguous: expected start {expected}, "
                    f"got [{stage.layers.start}, {stage.layers.end})"
                )
            expected = stage.layers.end
        if not stages or expected != stages[0].num_layers_total:
            raise InvalidRequest(f"stages cover layers [0, {expected}), not the whole model")
        self.stages = stages

    @classmethod
    def load(
        cls,
        model_dir: Path,
        splits: list[int] | None = None,
        device: str = "cpu",
        slots: Slots | None = None,
    ):
        """Stages split at the given layer indices, e.g. [13] -> [0, 13) + [13, n), each
        with a pool of `slots`."""
        total = AutoConfig.from_pretrained(model_dir).num_hidden_layers
        bounds = [0, *(splits or []), total]
        return cls([Stage(model_dir, LayerRange(a, b), device, slots) for a, b in pairwise(bounds)])

    @property
    def device(self) -> torch.device:
        return self.stages[0].device

    @property
    def slots(self) -> Slots:
        return self.stages[0].pool.slots

    def session(self, max_positions: int) -> PipelineSession:
        return PipelineSession([s.session(max_positions) for s in self.stages])

    def forward_batch(
        self, sessions: Sequence[PipelineSession], input_ids: torch.Tensor
    ) -> torch.Tensor:
        x = input_ids
        for index in range(len(self.stages)):
            x = forward_batch([s.sessions[index] for s in sessions], x)
        return x

    def close(self) -> None:
        self.stages.clear()


class PipelineSession:
    def __init__(self, sessions: list[StageSession]) -> None:
        self.sessions = sessions

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [1, n] -> float32 logits [1, vocab] of the last position."""
        x = input_ids
        for session in self.sessions:
            x = session.forward(x)
        return x

    def kv_stats(self) -> KVStats:
        return KVStats()  # every position computed here (the engine's prefix cache aside)

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions.clear()
