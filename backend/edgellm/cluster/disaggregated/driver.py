"""The driver's side of P/D: the StageRunner whose sessions submit prefill, handoff and
load to the two stage actors, fall back to the decode peer when the prefill peer is
lost, and let a replacement decode peer start from a lost one's handoff (handoffs.py). It
runs on the requester, in the backend that drives the Ray cluster."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from edgellm.cluster.calls import Calls, LocalCalls, RayCalls
from edgellm.cluster.disaggregated.handoffs import Kept, RecentHandoffs
from edgellm.cluster.disaggregated.messages import Handoff, Loaded
from edgellm.cluster.pipeline import DRAIN_TIMEOUT_S, ONE_AT_A_TIME, RayPipeline
from edgellm.cluster.plan import PEER_RESOURCE_PREFIX, Plan, StageRole
from edgellm.engine.runner import KVStats, Slots
from edgellm.errors import ClusterError, EdgeLLMError, InvalidRequest

__all__ = ["Calls", "DisaggregatedRunner", "DisaggregatedSession", "LocalCalls", "RayCalls"]

log = logging.getLogger(__name__)


class DisaggregatedRunner:
    """The StageRunner of a P/D plan: actors[0] prefills, actors[1] decodes."""

    def __init__(
        self,
        prefill: Any,
        decode: Any,
        calls: Calls,
        pids: Sequence[int] = (),
        plan=None,
        handoffs: RecentHandoffs | None = None,
        model_id: str = "",
    ) -> None:
        self.prefill = prefill
        self.decode = decode
        self.calls = calls
        self.actors = [prefill, decode]
        # Stage actor pids, prefill then decode (each on its peer's node).
        self.pids = list(pids)
        self.plan = plan
        # The cluster session's recent handoffs, shared with the runners of its later
        # plans (a failover's new decode peer starts from the lost one's), and this
        # runner's name among them.
        self.handoffs = handoffs if handoffs is not None else RecentHandoffs()
        self.model_id = model_id
        self.name = uuid.uuid4().hex

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def prefill_peer(self) -> str:
        """The prefill stage's peer id ("" without a plan: in-process tests)."""
        if self.plan is None:
            return ""
        return self.plan.stages[0].peer_resource.removeprefix(PEER_RESOURCE_PREFIX)

    @property
    def slots(self) -> Slots:
        # One request at a time: batching P/D (a batch handed over per step) is not built.
        return ONE_AT_A_TIME

    def forward_batch(self, sessions: Sequence[Any], input_ids: torch.Tensor) -> torch.Tensor:
        """One sequence at a time (`slots` admits one): its session's own forward."""
        return torch.cat([s.forward(input_ids[i : i + 1]) for i, s in enumerate(sessions)])

    @classmethod
    def load(
        cls, plan: Plan, model_id: str, handoffs: RecentHandoffs | None = None
    ) -> DisaggregatedRunner:
        """Start the two stage actors on their peers, each loading every layer;
        `handoffs` are the cluster session's recent ones (handoffs.py)."""
        roles = tuple(s.role for s in plan.stages)
        if roles != (StageRole.PREFILL, StageRole.DECODE):
            raise InvalidRequest(f"not a prefill/decode plan: roles {roles}")
        pipeline = RayPipeline.load(plan, model_id)
        prefill, decode = pipeline.actors
        calls = RayCalls()
        readying = [calls.submit(a, "ready_handoff", a is prefill) for a in (prefill, decode)]
        try:
            buffers = [calls.get(r, "readying a stage for the handoff failed") for r in readying]
        except EdgeLLMError:
            calls.kill(pipeline.actors)
            raise
        log.info("p/d: the prefill peer keeps %d encode buffers", buffers[0])
        return cls(prefill, decode, calls, pipeline.pids, plan, handoffs, model_id)

    def session(self, max_positions: int) -> DisaggregatedSession:
        """Open the request on both peers; without the prefill peer (lost since the
        last request) the decode peer does it all, with a warning."""
        sid = uuid.uuid4().hex
        prefill = self.calls.submit(self.prefill, "open", sid, max_positions)
        decode = self.calls.submit(self.decode, "open", sid, max_positions)
        self.calls.get(decode, "opening the decode stage's session failed")
        session = DisaggregatedSession(self, sid)
        try:
            self.calls.get(prefill, "opening the prefill stage's session failed")
        except EdgeLLMError as exc:  # the decode peer can do it all
            session.prefill_lost = f"{exc}"
        return session

    def close(self) -> None:
        """Stop both actors, once the prefill peer's blocks are in its Kubo (bounded)."""
        if self.actors and not self.calls.drain([self.prefill], DRAIN_TIMEOUT_S):
            log.warning("kv: the prefill peer may not have stored all of its blocks")
        self.calls.kill(self.actors)
        self.actors = []


@dataclass
class DisaggregatedSession:
    runner: DisaggregatedRunner
    sid: str
    prompt: list[int] | None = None
    handoff: Any = None
    load: Any = None
    loaded: Loaded | None = None
    warned: set[str] = field(default_factory=set)
    # Why the prefill peer cannot take this request ("" while it can).
    prefill_lost: str = ""
    # The earlier plan's handoff this session started from (a failover's new decode peer).
    resumed: Kept | None = None
    # Whether P was asked to store the blocks of this session's handoff in its Kubo.
    store_asked: bool = False

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.prompt is None:
            return self._prefill(input_ids)
        if self.loaded is None:
            self._await_load()
        calls = self.runner.calls
        handle = calls.submit(self.runner.decode, "forward", self.sid, input_ids)
        return calls.get(handle, "the decode stage failed")

    def _prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        runner, calls = self.runner, self.runner.calls
        self.prompt = [int(t) for t in input_ids[0].tolist()]
        kept = runner.handoffs.take(runner.name, runner.model_id, self.prompt)
        if kept is not None:
            return self._resume(kept)
        if self.prefill_lost:
            self._warn(
                f"the prefill peer is gone ({self.prefill_lost}); "
                "the decode peer computes the prompt"
            )
            self.load = calls.submit(runner.decode, "load_kv", self.sid, Handoff(), self.prompt)
            return self._decode_logits(self.prefill_lost)
        logits = calls.submit(runner.prefill, "prefill", self.sid, input_ids)
        self.handoff = calls.submit(runner.prefill, "handoff", self.sid)
        # D readies its cache meanwhile (the reply is not awaited: a D that fails it
        # fails the load after it too, which is awaited).
        calls.submit(runner.decode, "prefault", self.sid, len(self.prompt))
        self.load = calls.submit(runner.decode, "load_kv", self.sid, self.handoff, self.prompt)
        try:
            return calls.get(logits, "the prefill stage failed")
        except EdgeLLMError as exc:  # the decode peer can do it all
            self._warn(f"the prefill peer failed ({exc}); the decode peer computes the prompt")
            return self._decode_logits(str(exc))

    def _resume(self, kept: Kept) -> torch.Tensor:
        """A failover's new decode peer: it fetches the blocks the prefill peer handed
        over for the lost request (still in its Kubo) and computes the rest of the
        tokens, those generated before the loss among them, and the first token's
        logits; the prefill peer computes nothing. If the blocks cannot be had, the
        decode peer computes it all, with a warning (PeerKV.load)."""
        assert self.prompt is not None
        self.resumed = kept
        log.info(
            "p/d: resuming on a new decode peer from the prefill peer's handoff of %d prompt "
            "tokens, %d tokens after the prompt",
            kept.handoff.tokens,
            len(self.prompt) - len(kept.prompt),
        )
        # Stored by the lost request: nothing is stored now, and its warnings were said.
        handoff = dataclasses.replace(kept.handoff, store_ms=0.0, warnings=())
        decode = self.runner.decode
        self.load = self.runner.calls.submit(
            decode, "load_kv", self.sid, handoff, self.prompt, True
        )
        return self._decode_logits("the decode peer left no position to compute")

    def _keep_handoff(self) -> None:
        """Keep this request's handoff for a later plan's decode peer (the runner's
        handoffs): the one it resumed from, or the prefill peer's if it finished."""
        runner, calls = self.runner, self.runner.calls
        if self.resumed is not None:
            kept = self.resumed
            runner.handoffs.keep(runner.name, kept.model, kept.prompt, kept.handoff)
            return
        if self.prompt is None or self.handoff is None or not calls.done(self.handoff):
            return
        try:
            handoff = calls.get(self.handoff, "")
        except EdgeLLMError:  # P failed: nothing was handed over
            return
        # Without the bytes: kept, they would pin them in P's object store; a later
        # decode peer fetches the blocks from P's Kubo.
        handoff = dataclasses.replace(handoff, blocks=None)
        runner.handoffs.keep(runner.name, runner.model_id, self.prompt, handoff)

    def _decode_logits(self, why: str) -> torch.Tensor:
        """The first token's logits from the decode peer, which computed the prompt."""
        calls = self.runner.calls
        self._await_load()
        handle = calls.submit(self.runner.decode, "take_logits", self.sid)
        logits = calls.get(handle, "the decode stage failed computing the prompt")
        if logits is None:  # took every block from P after all: no position left
            raise ClusterError(f"the prefill stage failed: {why}")
        return logits

    def _await_load(self) -> None:
        try:
            self._take_load()
        finally:
            self._store_handoff()

    def _store_handoff(self) -> None:
        """Have P put the blocks it handed over into its Kubo, now that D has taken them
        or failed to (on a shared host that store would slow D's load); once."""
        if self.handoff is None or self.store_asked:
            return
        self.store_asked = True
        try:
            self.runner.calls.submit(self.runner.prefill, "store_handoff")
        except EdgeLLMError as exc:  # P is gone: nothing to store
            log.debug("p/d: asking the prefill peer to store its blocks: %s", exc)

    def _take_load(self) -> None:
        calls = self.runner.calls
        try:
            loaded = calls.get(self.load, "the decode stage failed loading the prompt")
        except EdgeLLMError:
            self._keep_handoff()  # D failed, yet P's blocks may serve its replacement
            if not self._handoff_failed():
                raise
            # D never ran the load (its argument failed): its session is still empty.
            self._warn(
                "the prefill peer was lost before handing over its KV blocks; "
                "the decode peer computes the prompt"
            )
            decode = self.runner.decode
            self.load = calls.submit(decode, "load_kv", self.sid, Handoff(), self.prompt)
            loaded = calls.get(self.load, "the decode stage failed computing the prompt")
        self.loaded = loaded
        self._keep_handoff()
        for message in loaded.warnings:
            self._warn(message)
        log.info(
            "p/d: %d prompt tokens from the prefill peer's KV blocks, %d computed on the "
            "decode peer (store %.0f ms, fetch %.0f ms, %d block parts handed over directly)",
            loaded.cached_tokens,
            loaded.computed_tokens,
            loaded.store_ms,
            loaded.fetch_ms,
            loaded.direct_parts,
        )

    def _handoff_failed(self) -> bool:
        calls = self.runner.calls
        if self.handoff is None:  # none was asked for: the failure was D's own
            return False
        try:
            calls.get(self.handoff, "")
        except EdgeLLMError:  # any failure of P's handoff
            return True
        return False

    def _warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning("p/d: %s", message)

    def kv_stats(self) -> KVStats:
        """The handoff so far: D's load if it finished, else P's store if that did."""
        calls = self.runner.calls
        loaded = self.loaded
        if loaded is None and self.load is not None and calls.done(self.load):
            try:
                loaded = calls.get(self.load, "")
            except EdgeLLMError:  # D's failure is the request's; here only stats are asked
                loaded = None
        if loaded is not None:
            # A failed spot check of P's blocks: the node stops planning with P.
            prefill = self.runner.prefill_peer
            workers = (prefill,) if loaded.dropped and prefill else ()
            return KVStats(
                loaded.cached_tokens, loaded.fetch_ms, loaded.store_ms, loaded.dropped, workers
            )
        if self.handoff is not None and calls.done(self.handoff):
            try:
                return KVStats(store_ms=calls.get(self.handoff, "").store_ms)
            except EdgeLLMError:  # as above: stats only
                pass
        return KVStats()

    def close(self) -> None:
        self._store_handoff()  # a one-token request never awaited D's load
        for actor in self.runner.actors:
            try:
                self.runner.calls.submit(actor, "close", self.sid)
            except EdgeLLMError as exc:  # best effort: the actor may be gone
                log.debug("p/d: closing a stage session: %s", exc)
