"""RayPipeline: the StageRunner whose stages are actors on the plan's peers.

Per decode step the driver submits one call per stage, each taking the previous call's
ObjectRef, and waits once for the last: Ray hands activations from stage to stage
without a driver round-trip in between (small tensors ride inline in the call). A batched
step carries the whole batch's activations [b, 1, h] the same way (`forward_batch`), each
stage running its sessions' slots at once. The last
stage returns float32 logits, and the shared decode loop samples on the driver, so
greedy and seeded sampling are exactly the local engine's.

Before the prefill the stages take the prompt's cached KV blocks of their layers from
their peers' stores and the request's manifest, and after it they store theirs
(edgellm.cluster.stage_prefix).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import ray
import torch
from ray.exceptions import RayError

from edgellm.cluster.actor import StageActor
from edgellm.cluster.calls import RayCalls, ray_error
from edgellm.cluster.plan import Plan
from edgellm.cluster.stage_prefix import keep_prompt, load_prefix
from edgellm.engine.runner import KVStats, Slots

log = logging.getLogger(__name__)

# A stage needs little of Ray's CPU accounting: torch uses the threads it is given.
STAGE_NUM_CPUS = 0.001
STAGE_RESOURCE_UNITS = 0.001
LOAD_TIMEOUT_S = 300.0
# No batching: one request at a time, of any length (a slot when it fits, else its own cache).
ONE_AT_A_TIME = Slots(1, 2**62)


class RayPipeline:
    def __init__(self, plan: Plan, actors: list, pids: list[int], slots: Slots) -> None:
        self.plan = plan
        self.actors = actors
        self._slots = slots  # every stage actor's pool
        # Stage actor pids, in plan order (each on its peer's node).
        self.pids = pids

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def slots(self) -> Slots:
        return self._slots

    @classmethod
    def load(cls, plan: Plan, model_id: str, slots: Slots | None = None) -> RayPipeline:
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
            _kill(actors)
            raise ray_error(exc, "loading a stage failed") from None
        return cls(plan, actors, pids, slots or ONE_AT_A_TIME)

    def session(self, max_positions: int) -> RaySession:
        sid = uuid.uuid4().hex
        try:
            ray.get([a.open.remote(sid, max_positions) for a in self.actors])
        except RayError as exc:
            raise ray_error(exc, "opening a stage session failed") from None
        return RaySession(self.actors, sid)

    def forward_batch(
        self, sessions: Sequence[RaySession], input_ids: torch.Tensor
    ) -> torch.Tensor:
        """One decode step of `sessions` on every stage, chained like `RaySession.forward`."""
        sids = [s.sid for s in sessions]
        x = input_ids
        for actor in self.actors:
            x = actor.forward_batch.remote(sids, x)
        try:
            return ray.get(x)
        except RayError as exc:
            raise ray_error(exc, "a stage failed") from None

    def close(self) -> None:
        _kill(self.actors)
        self.actors = []


class RaySession:
    def __init__(self, actors: list, sid: str) -> None:
        self.actors = actors
        self.sid = sid
        # The whole prompt and the blocks the stages took from the cache, until the
        # prefill has run (then None).
        self.prompt: list[int] | None = None
        self.cached_blocks = 0
        self.prefilled = False

    def load_prefix(self, prompt_ids: Sequence[int], manifest: bytes) -> tuple[int, float]:
        self.prompt = list(prompt_ids)
        started = time.monotonic()
        hit = load_prefix(RayCalls(), self.actors, self.sid, self.prompt, manifest)
        log.info(
            "stages took %d cached prompt tokens in %.2fs", hit.tokens, time.monotonic() - started
        )
        self.cached_blocks = len(hit.per_stage) and min(hit.per_stage)
        return hit.tokens, hit.fetch_ms

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = input_ids
        for actor in self.actors:
            x = actor.forward.remote(self.sid, x)
        try:
            out = ray.get(x)
        except RayError as exc:
            raise ray_error(exc, "a stage failed") from None
        if not self.prefilled:
            self._keep(input_ids)
        return out

    def _keep(self, input_ids: torch.Tensor) -> None:
        """After the prefill: every stage stores its blocks of the prompt."""
        self.prefilled = True
        prompt = self.prompt if self.prompt is not None else input_ids[0].tolist()
        keep_prompt(RayCalls(), self.actors, self.sid, prompt, self.cached_blocks)

    def kv_stats(self) -> KVStats:
        return KVStats()  # the stages compute every position

    def close(self) -> None:
        for actor in self.actors:
            actor.close.remote(self.sid)


def _peers(plan: Plan) -> list[str]:
    return [s.peer_resource for s in plan.stages]


def _kill(actors: list) -> None:
    for actor in actors:
        ray.kill(actor)
