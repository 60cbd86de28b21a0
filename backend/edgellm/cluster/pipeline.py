"""RayPipeline: the StageRunner whose stages are actors on the plan's peers.

Per decode step the driver submits one call per stage, each taking the previous call's
ObjectRef, and waits once for the last: Ray hands activations from stage to stage
without a driver round-trip in between (small tensors ride inline in the call, as numpy
arrays: edgellm.cluster.wire). A batched step carries the whole batch's activations
[b, 1, h] the same way (`forward_batch`), each stage running its sessions' slots at once.
The last stage returns float32 logits, and the shared decode loop samples on the driver, so
greedy and seeded sampling are exactly the local engine's.

Before the prefill the stages take the prompt's cached KV blocks of their layers from
their peers' stores and the request's manifest, and after it they store theirs
(edgellm.cluster.stage_prefix).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import ray
import torch
from ray.exceptions import RayError

from edgellm.cluster import wire
from edgellm.cluster.actor import StageActor
from edgellm.cluster.calls import AfterOpen, Calls, RayCalls, kill, ray_error
from edgellm.cluster.plan import Plan
from edgellm.cluster.stage_prefix import (
    StagePrefixHit,
    keep_prompt,
    load_prefix,
    spot_checked_prefill,
    taken,
)
from edgellm.engine.runner import KVStats, Slots

log = logging.getLogger(__name__)

# A stage needs little of Ray's CPU accounting: torch uses the threads it is given.
STAGE_NUM_CPUS = 0.001
STAGE_RESOURCE_UNITS = 0.001
LOAD_TIMEOUT_S = 300.0
# How long the cluster's end waits for the stages to finish storing the prompt's KV
# blocks (background threads in the stage processes, which the end stops). Bounded: a
# stage lost to a cut link never answers.
DRAIN_TIMEOUT_S = 20.0
# Which cached position a prefill checks: a holder must not predict it.
_RNG = random.SystemRandom()
# No batching: one request at a time, of any length (a slot when it fits, else its own cache).
ONE_AT_A_TIME = Slots(1, 2**62)


class RayPipeline:
    def __init__(
        self, plan: Plan, actors: list, pids: list[int], slots: Slots, spot_check: bool = True
    ) -> None:
        self.plan = plan
        self.actors = actors
        self._slots = slots  # every stage actor's pool
        # Stage actor pids, in plan order (each on its peer's node).
        self.pids = pids
        # Whether a prefill after cached blocks spot-checks one of them (edgellm.kv.spot).
        self.spot_check = spot_check

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def slots(self) -> Slots:
        return self._slots

    @classmethod
    def load(
        cls, plan: Plan, model_id: str, slots: Slots | None = None, spot_check: bool = True
    ) -> RayPipeline:
        """Start one stage actor per plan stage on its peer and load its layers there,
        with a pool of `slots` (the driver's config decides, so all stages agree; None:
        one request at a time, in the stage's own small pool)."""
        remote = ray.remote(StageActor)
        actors = [
            remote.options(
                num_cpus=STAGE_NUM_CPUS,
                resources={s.peer_resource: STAGE_RESOURCE_UNITS},
                max_restarts=0,
            ).remote()
            for s in plan.stages
        ]
        loads = [
            actor.load.remote(model_id, s.layers.start, s.layers.end, s.weights_cid, peer, slots)
            for actor, s, peer in zip(actors, plan.stages, _peers(plan), strict=True)
        ]
        try:
            pids = ray.get(loads, timeout=LOAD_TIMEOUT_S)
        except RayError as exc:
            kill(actors)
            raise ray_error(exc, "loading a stage failed") from None
        return cls(plan, actors, pids, slots or ONE_AT_A_TIME, spot_check)

    def session(self, max_positions: int) -> RaySession:
        """Open a request's session on every stage; its first reply waits for the opens
        (`AfterOpen`), which are not a round trip of their own."""
        sid = uuid.uuid4().hex
        calls = AfterOpen.open(RayCalls(), self.actors, sid, max_positions)
        return RaySession(self.actors, sid, self.spot_check, calls)

    def forward_batch(
        self, sessions: Sequence[RaySession], input_ids: torch.Tensor
    ) -> torch.Tensor:
        """One decode step of `sessions` on every stage, chained like `RaySession.forward`."""
        sids = [s.sid for s in sessions]
        x = wire.pack(input_ids)
        for actor in self.actors:
            x = actor.forward_batch.remote(sids, x)
        try:
            return wire.unpack(ray.get(x))
        except RayError as exc:
            raise ray_error(exc, "a stage failed") from None

    def close(self) -> None:
        _drain(self.actors)
        kill(self.actors)
        self.actors = []


class RaySession:
    """One request's state on the stages. Its calls go through `calls` (RayCalls; the
    tests' in-process actors use LocalCalls), so the same code runs both."""

    def __init__(
        self, actors: list, sid: str, spot_check: bool = True, calls: Calls | None = None
    ) -> None:
        self.actors = actors
        self.sid = sid
        self.spot_check = spot_check
        self.calls: Calls = calls or RayCalls()
        # The whole prompt, the request's manifest and what the stages took from the
        # cache, until the prefill has run.
        self.prompt: list[int] | None = None
        self.manifest = b""
        self.hit = StagePrefixHit()
        self.prefilled = False

    def load_prefix(self, prompt_ids: Sequence[int], manifest: bytes) -> tuple[int, float]:
        self.prompt, self.manifest = list(prompt_ids), manifest
        started = time.monotonic()
        hit = load_prefix(self.calls, self.actors, self.sid, self.prompt, manifest)
        log.info(
            "stages take %d cached prompt tokens (found in %.2fs)",
            hit.tokens,
            time.monotonic() - started,
        )
        self.hit = hit
        return hit.tokens, hit.fetch_ms

    def prefill_cached(self) -> tuple[torch.Tensor | None, tuple[str, ...]]:
        """The prompt past the cached tokens, with one of them spot-checked on every stage
        (edgellm.cluster.stage_prefix.spot_checked_prefill)."""
        assert self.prompt is not None and self.hit.tokens > 0
        if not self.spot_check:
            logits = self.forward(torch.tensor([self.prompt[self.hit.tokens :]]))
            taken(self.calls, self.hit)
            return logits, ()
        position = _RNG.randrange(self.hit.tokens)
        logits, dropped = spot_checked_prefill(
            self.calls,
            self.actors,
            self.sid,
            self.prompt,
            self.hit,
            position,
            self.manifest,
        )
        if logits is None:  # every stage emptied its session: all of it is computed
            self.hit = StagePrefixHit()
        else:
            self._keep(self.prompt)
        return logits, dropped

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x: Any = input_ids
        for actor in self.actors:
            x = self.calls.submit(actor, "forward", self.sid, x)
        out = self.calls.get(x, "a stage failed")
        if not self.prefilled:
            self._keep(self.prompt if self.prompt is not None else input_ids[0].tolist())
        return out

    def _keep(self, prompt: Sequence[int]) -> None:
        """After the prefill: every stage stores its blocks of the prompt."""
        self.prefilled = True
        keep_prompt(self.calls, self.actors, self.sid, list(prompt), self.hit.blocks)

    def kv_stats(self) -> KVStats:
        return KVStats()  # the stages compute every position

    def close(self) -> None:
        for actor in self.actors:
            self.calls.submit(actor, "close", self.sid)


def _peers(plan: Plan) -> list[str]:
    return [s.peer_resource for s in plan.stages]


def _drain(actors: list) -> None:
    """Let every stage finish storing its KV blocks before it is stopped."""
    if not RayCalls().drain(actors, DRAIN_TIMEOUT_S):
        log.warning("kv: a stage may not have stored all of its blocks (lost, or still at it)")
