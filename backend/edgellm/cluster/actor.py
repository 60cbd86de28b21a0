"""The stage actor: one per peer, holding its layer range from that peer's own store.

It runs in a Ray worker process on the peer's node, so `load_config()` there reads the
environment the peer's backend gave its Ray node (EDGELLM_MODELS_DIR, EDGELLM_IPFS_API):
the weights come from the peer's disk, never over the cluster, and must match the plan's
weights CID; KV blocks go to and come from the peer's own Kubo.

A pipeline stage uses open/forward/close, and forward_batch for a decode step of several
sessions at once (continuous batching: each session holds one slot of the stage's pool);
prefix_fetch before its prefill, prefix_take just before it (submitted with it, not waited
for), forward_checked for that prefill (the spot check of what it took) and prefix_keep after
it for the peer's KV blocks of its layers
(edgellm.cluster.stage_prefix). In a prefill/decode plan
(edgellm.cluster.disaggregated) the prefill stage uses open/prefill/handoff, the decode
stage open/load_kv/forward/close; their KV work is the worker side of P/D (`PeerKV`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import ray
import torch

from edgellm.cluster.disaggregated.direct import map_object_store, put_chunks
from edgellm.cluster.disaggregated.messages import Handoff, Loaded
from edgellm.cluster.disaggregated.worker import DIRECT_MAX_BYTES, PeerKV
from edgellm.cluster.stage_prefix import StagePrefix
from edgellm.cluster.wire import on_the_wire
from edgellm.config import load_config
from edgellm.engine.runner import Slots
from edgellm.engine.torch.stage import LayerRange, Stage, StageSession, forward_batch
from edgellm.errors import InvalidRequest, StoreError, WeightsMismatch
from edgellm.kv import spot
from edgellm.models.store import ModelStore


def stage_threads(positions: int) -> int:
    """Torch threads for a stage's forward of `positions` new positions a sequence.

    A prefill (more than one): every CPU this process may run on, as torch itself takes in
    a plain process. Ray sets OMP_NUM_THREADS to an actor's CPU request, floored, at least
    1, when the environment has none; stages ask for 0.001 CPU (Ray's accounting must not
    refuse a stage), so torch would run a stage on one thread while the single-process
    engine uses every core, and a prefill's matrix products need them.

    A decode step (one): half of them, at least one. Its small matrix-vector products are
    bound by memory, not arithmetic: in one process, 1 and 2 threads decoded alike here
    (SmolLM2, two in-process stages, 20-22 tokens/s either way). But a stage is a process
    beside its peer's node, Kubo, raylet (and on the requester, the driver), and every
    parallel region of a step waits at its end for a thread that one of those preempted.
    A two-stage split through Ray on the 2-core machine, runs of 64 tokens interleaved:
    one thread a step 15.1-19.3 tokens/s (mean 17.4 of 6), two 13.3-17.5 (mean 15.0); one
    thread for the prefill too made the time to first token worse (1.27-1.45 times the
    engine's, against 1.20-1.24). The other half of the cores is left to those processes.
    The stages of a pipeline run one after another for a token, so their threads do not
    compete with each other."""
    cores = max(1, len(os.sched_getaffinity(0)))
    return cores if positions > 1 else max(1, cores // 2)


def _in_ray_actor() -> bool:
    """Whether this object runs as a Ray actor (not in-process, as tests drive it)."""
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


class StageActor:
    def __init__(self) -> None:
        self.stage: Stage | None = None
        self.sessions: dict[str, StageSession] = {}
        self.weights_cid = ""
        # KV blocks in this peer's Kubo (P/D), opened on first use.
        self.kv: PeerKV | None = None
        # Prompt token ids of prefilled sessions, until their handoff.
        self.prompts: dict[str, list[int]] = {}
        # Logits of the prompt's last position, when load_kv computed it (see take_logits).
        self.prompt_logits: dict[str, torch.Tensor] = {}
        # The prefix cache of a pipeline stage (edgellm.cluster.stage_prefix).
        self.prefix: StagePrefix | None = None
        # Whether results go back through Ray, their tensors as arrays (cluster.wire).
        self.on_ray = _in_ray_actor()
        # Torch's threads, as last set (_threads_for).
        self.threads = 0

    def load(
        self,
        model_id: str,
        start: int,
        end: int,
        weights_cid: str,
        peer: str,
        slots: Slots | None = None,
    ) -> int:
        """Load layers [start, end) of `model_id`, with a slot pool of `slots` (None: one
        slot); returns this process's pid."""
        store = ModelStore(load_config().models_dir)
        manifest = store.manifest(model_id)
        if manifest is None:
            raise StoreError(f"{peer}: model {model_id!r} is not in its store")
        if manifest.weights_cid != weights_cid:
            raise WeightsMismatch(
                f"{peer} holds weights {manifest.weights_cid} for {model_id!r}, "
                f"the plan names {weights_cid}"
            )
        self.stage = Stage(store.path(model_id), LayerRange(start, end), "cpu", slots)
        self.weights_cid = weights_cid
        return os.getpid()

    def _threads_for(self, positions: int) -> None:
        """Torch's threads for a forward of `positions` a sequence (stage_threads), in a
        Ray actor's process of its own (in-process actors leave their host's setting)."""
        if not self.on_ray:
            return
        threads = stage_threads(positions)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads

    def open(self, session_id: str, max_positions: int) -> None:
        if self.stage is None:
            raise InvalidRequest("stage not loaded")
        self.sessions[session_id] = self.stage.session(max_positions)

    @on_the_wire
    def forward(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        self._threads_for(inputs.shape[1])
        return self.sessions[session_id].forward(inputs)

    @on_the_wire
    def forward_batch(self, session_ids: list[str], inputs: torch.Tensor) -> torch.Tensor:
        """One decode step of several sessions: row i of `inputs` is session_ids[i]'s."""
        self._threads_for(1)
        return forward_batch([self.sessions[sid] for sid in session_ids], inputs)

    def close(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.close()  # its slot back to the pool
        self.prompts.pop(session_id, None)
        self.prompt_logits.pop(session_id, None)
        if self.prefix is not None:
            self.prefix.forget(session_id)

    # -- prefill/decode ----------------------------------------------------------------

    def _kv(self) -> PeerKV:
        if self.kv is None:
            self.kv = PeerKV.from_config(self.weights_cid)
        return self.kv

    @on_the_wire
    def prefill(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        """The prefill peer: the prompt [1, n] through every layer; the last position's
        logits. The session waits for `handoff`."""
        self._threads_for(inputs.shape[1])
        session = self.sessions[session_id]
        try:
            logits = session.forward(inputs)
        except BaseException:
            self.close(session_id)  # so the handoff names no half-computed blocks
            raise
        self.prompts[session_id] = [int(t) for t in inputs[0].tolist()]
        return logits

    def ready_handoff(self, prefill: bool) -> int:
        """A P/D plan's stage, at load: its side of a handoff readied before any request.
        The prefill peer fills its pool of encode buffers (PeerKV.keep_buffers); both
        open their block store and map their node's object store into this process
        (direct.map_object_store), where the prefill peer puts the handoff's bytes and the
        decode peer reads them, so that neither faults it in page by page on a request's
        path. Returns the buffers' count. Only as a Ray actor, whose handoff's bytes are
        copied into the object store before a buffer is reused (in-process, the decode
        side reads them where they lie): 0 otherwise."""
        if self.stage is None:
            raise InvalidRequest("stage not loaded")
        if not self.on_ray:
            return 0
        kv = self._kv()
        count = kv.keep_buffers(self.stage.kv_layout) if prefill else 0
        if kv.store is not None:  # without one nothing is handed over
            map_object_store(DIRECT_MAX_BYTES)
        return count

    def handoff(self, session_id: str) -> Handoff:
        """The prefill peer, after `prefill`: store the prompt's blocks, free the session,
        return the manifest (empty when there is nothing to hand over)."""
        session = self.sessions.pop(session_id, None)
        prompt = self.prompts.pop(session_id, None)
        if session is None or prompt is None:
            return Handoff()
        try:
            handoff = self._kv().store_prompt(session, prompt)
        finally:
            session.close()
        if handoff.blocks is not None and self.on_ray:
            # Into this node's object store: the decode peer's load takes the bytes from
            # there, and the driver, which gets every Handoff, only references. The put
            # is part of the handoff's time.
            started = time.monotonic()
            chunks = put_chunks(handoff.blocks)
            ms = handoff.store_ms + (time.monotonic() - started) * 1000.0
            handoff = dataclasses.replace(handoff, blocks=chunks, store_ms=ms)
        return handoff

    def store_handoff(self) -> None:
        """The prefill peer, once the decode peer has taken its last handoff: put that
        handoff's blocks into this peer's Kubo (in the background)."""
        if self.kv is not None:
            self.kv.store_pending()

    def prefault(self, session_id: str, positions: int) -> None:
        """The decode peer, while the prefill peer computes: map the session's cache for
        the prompt's positions, so that load_kv's import does not take the page faults."""
        with torch.inference_mode():
            self.sessions[session_id].prefault(positions)

    def load_kv(
        self, session_id: str, handoff: Handoff, prompt: list[int], logits: bool = False
    ) -> Loaded:
        """The decode peer: fill the opened session with the prompt from the prefill
        peer's blocks, computing what they do not cover (with `logits`, at least the
        last position, whose logits take_logits returns)."""
        if self.stage is None:
            raise InvalidRequest("stage not loaded")
        self._threads_for(len(prompt))  # the prompt past P's blocks is computed here
        loaded = self._kv().load(self.sessions[session_id], handoff, prompt, logits)
        if loaded.logits is not None:
            self.prompt_logits[session_id] = loaded.logits
        return dataclasses.replace(loaded, logits=None)

    @on_the_wire
    def take_logits(self, session_id: str) -> torch.Tensor | None:
        """The logits of the prompt's last position if load_kv computed it (the first
        token, when the prefill peer was lost before returning its own)."""
        return self.prompt_logits.pop(session_id, None)

    # -- a pipeline stage's prefix cache (edgellm.cluster.stage_prefix) --------------------

    def _prefix(self) -> StagePrefix:
        if self.prefix is None:
            self.prefix = StagePrefix(self._kv())
        return self.prefix

    def prefix_fetch(self, session_id: str, prompt: list[int], manifest: bytes) -> tuple[int, int]:
        """Fetch the prompt's cached blocks of this stage's layers; how many, and the
        tokens a block holds."""
        prefix = self._prefix()
        count = prefix.fetch(session_id, self.sessions[session_id], prompt, manifest)
        return count, prefix.kv.block_size

    def prefix_take(self, session_id: str, count: int) -> int:
        """Import the first `count` fetched blocks; the tokens they hold."""
        return self._prefix().take(session_id, self.sessions[session_id], count)

    def prefix_keep(self, session_id: str, prompt: list[int], first: int) -> None:
        """After the prefill: store this stage's blocks of the prompt from block `first`."""
        session = self.sessions.get(session_id)
        if session is not None:
            self._prefix().keep(session_id, session, prompt, first)

    @on_the_wire
    def forward_checked(
        self, session_id: str, carried: tuple[torch.Tensor, list[tuple[float, float]]], check: int
    ) -> tuple[torch.Tensor, list[tuple[float, float]]]:
        """`forward` with `check`, in a chain that carries the stages' spot-check results:
        (the input, the results of the stages before) -> (the output, those results and
        this stage's: how far the recomputed K/V of its layers are from the imported ones,
        and the tolerance for its dtype). The driver then reads every stage's verdict from
        the last reply, with no round trip of its own after the prefill."""
        inputs, differences = carried
        self._threads_for(inputs.shape[1])
        session = self.sessions[session_id]
        out = session.forward(inputs, check=check)
        mine = (session.difference(check), spot.tolerance(session.kv_layout.dtype))
        return out, [*differences, mine]

    def prefix_reject(self, session_id: str, position: int) -> bool:
        """A failed spot check: drop what the session took; whether any came from others."""
        return self._prefix().reject(session_id, self.sessions[session_id], position)

    def prefix_drain(self, timeout_s: float) -> bool:
        """Before the cluster ends: wait (bounded) for this stage's blocks to be stored
        (a pipeline stage's prefix blocks, a prefill peer's handed-over ones)."""
        kept = self.prefix is None or self.prefix.wait_stored(timeout_s)
        return (self.kv is None or self.kv.wait_stored(timeout_s)) and kept
