"""The stage actor: one per peer, holding its layer range from that peer's own store.

It runs in a Ray worker process on the peer's node, so `load_config()` there reads the
environment the peer's backend gave its Ray node (EDGELLM_MODELS_DIR): the weights come
from the peer's disk, never over the cluster, and must match the plan's weights CID.
"""

from __future__ import annotations

import os

import torch

from edgellm.config import load_config
from edgellm.engine.torch.stage import LayerRange, Stage, StageSession
from edgellm.errors import InvalidRequest, StoreError, WeightsMismatch
from edgellm.models.store import ModelStore


class StageActor:
    def __init__(self) -> None:
        self.stage: Stage | None = None
        self.sessions: dict[str, StageSession] = {}

    def load(self, model_id: str, start: int, end: int, weights_cid: str, peer: str) -> int:
        """Load layers [start, end) of `model_id`; returns this process's pid."""
        store = ModelStore(load_config().models_dir)
        manifest = store.manifest(model_id)
        if manifest is None:
            raise StoreError(f"{peer}: model {model_id!r} is not in its store")
        if manifest.weights_cid != weights_cid:
            raise WeightsMismatch(
                f"{peer} holds weights {manifest.weights_cid} for {model_id!r}, "
                f"the plan names {weights_cid}"
            )
        self.stage = Stage(store.path(model_id), LayerRange(start, end), "cpu")
        return os.getpid()

    def open(self, session_id: str, max_positions: int) -> None:
        if self.stage is None:
            raise InvalidRequest("stage not loaded")
        self.sessions[session_id] = self.stage.session(max_positions)

    def forward(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        return self.sessions[session_id].forward(inputs)

    def step(self, item: tuple[str, torch.Tensor]) -> tuple[str, torch.Tensor]:
        """forward() in the shape a Ray compiled graph passes along: (session, tensor)."""
        session_id, inputs = item
        return session_id, self.sessions[session_id].forward(inputs)

    def close(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
