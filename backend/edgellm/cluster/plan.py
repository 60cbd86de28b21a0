"""A placement plan: which peer runs which contiguous layer range of which weights.

Two kinds (inference.proto's StageRole):

- a **pipeline**: every stage has role PIPELINE; the stages split the layers into
  contiguous ranges, each on its own peer;
- **prefill/decode** (P/D): exactly two stages, both holding every layer [0, n), on
  different peers: the PREFILL stage computes the prompt and stores its KV blocks in its
  peer's IPFS node, the DECODE stage fetches them by CID and generates
  (edgellm.cluster.disaggregated).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from edgellm.engine.layers import LayerRange
from edgellm.errors import InvalidRequest

PEER_RESOURCE_PREFIX = "peer:"
_PEER_RESOURCE = re.compile(r"^peer:[A-Za-z0-9._-]{1,128}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def peer_resource(text: str) -> str:
    """A Ray custom resource naming one peer, e.g. "peer:12D3KooW..."."""
    if not _PEER_RESOURCE.match(text):
        raise InvalidRequest(
            f"peer resource must be 'peer:' and 1-128 of [A-Za-z0-9._-], got {text!r}"
        )
    return text


def session_id(text: str) -> str:
    if not _SESSION_ID.match(text):
        raise InvalidRequest(f"session_id must be 1-128 of [A-Za-z0-9._-], got {text!r}")
    return text


class StageRole(enum.IntEnum):
    """inference.proto's StageRole, number for number."""

    PIPELINE = 0
    PREFILL = 1
    DECODE = 2


@dataclass(frozen=True)
class PlanStage:
    # Ray resource of the peer that runs this stage, e.g. "peer:12D3KooW...".
    peer_resource: str
    # Layers [start, end) of the model.
    layers: LayerRange
    # CID the peer's store must hold for this model.
    weights_cid: str
    role: StageRole = StageRole.PIPELINE


@dataclass(frozen=True)
class Plan:
    # Cluster session the stages run in (see ClusterManager).
    session_id: str
    # Ordered stages; together they cover every layer exactly once (a pipeline), or
    # prefill then decode, each with every layer (P/D).
    stages: tuple[PlanStage, ...]

    @property
    def disaggregated(self) -> bool:
        """A prefill/decode plan (any stage has a role other than PIPELINE)."""
        return any(s.role != StageRole.PIPELINE for s in self.stages)

    def validate(self, num_layers: int) -> None:
        session_id(self.session_id)
        if not self.stages:
            raise InvalidRequest("plan has no stages")
        for i, stage in enumerate(self.stages):
            if stage.role not in tuple(StageRole):
                raise InvalidRequest(f"plan stage {i}: unknown role {int(stage.role)}")
        if self.disaggregated:
            self._validate_pd(num_layers)
            return
        expected = 0
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            peer_resource(stage.peer_resource)
            if stage.peer_resource in seen:
                raise InvalidRequest(f"plan stage {i}: peer {stage.peer_resource} appears twice")
            seen.add(stage.peer_resource)
            if stage.layers.start != expected:
                raise InvalidRequest(
                    f"plan stage {i}: layers must be contiguous, expected start {expected}, "
                    f"got [{stage.layers.start}, {stage.layers.end})"
                )
            stage.layers.validate(num_layers)
            if not stage.weights_cid:
                raise InvalidRequest(f"plan stage {i}: weights_cid is empty")
            expected = stage.layers.end
        if expected != num_layers:
            raise InvalidRequest(f"plan covers layers [0, {expected}), the model has {num_layers}")
        if len({s.weights_cid for s in self.stages}) != 1:
            raise InvalidRequest("plan stages name different weights CIDs")

    def _validate_pd(self, num_layers: int) -> None:
        roles = tuple(StageRole(s.role) for s in self.stages)
        if roles != (StageRole.PREFILL, StageRole.DECODE):
            names = ", ".join(r.name for r in roles)
            raise InvalidRequest(
                f"a prefill/decode plan has exactly two stages, PREFILL then DECODE; got {names}"
            )
        for i, stage in enumerate(self.stages):
            peer_resource(stage.peer_resource)
            stage.layers.validate(num_layers)
            if (stage.layers.start, stage.layers.end) != (0, num_layers):
                raise InvalidRequest(
                    f"plan stage {i} ({roles[i].name}): a prefill/decode stage holds every "
                    f"layer [0, {num_layers}), got [{stage.layers.start}, {stage.layers.end})"
                )
            if not stage.weights_cid:
                raise InvalidRequest(f"plan stage {i}: weights_cid is empty")
        prefill, decode = self.stages
        if prefill.peer_resource == decode.peer_resource:
            raise InvalidRequest(
                f"prefill and decode must run on different peers, both are {prefill.peer_resource}"
            )
        if prefill.weights_cid != decode.weights_cid:
            raise InvalidRequest("plan stages name different weights CIDs")
