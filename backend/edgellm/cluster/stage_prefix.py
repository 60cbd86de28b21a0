"""The prefix cache of a chain of stage actors (a split, or one whole-model stage).

Before the prompt's prefill the driver asks every stage for the prompt's leading blocks of
its own layer range (`load_prefix`):

1. each stage plans them from its peer's store and the request's manifest (parts held by
   other peers, found by the requester in the swarm), fetches and verifies them through the
   same handoff code as the P/D decode peer (`edgellm.kv.handoff`), and says how many
   it got (`StagePrefix.fetch`);
2. the stages agree on the smallest count: a stage's cache must hold exactly the positions
   the next stage's does, so all crop to it and import only that many (`StagePrefix.take`).
   The driver does not wait for those imports: a stage runs one caller's calls in the
   order they were submitted, so its import runs before its part of the prefill (the last
   stage's while the first computes), and the imports' replies are read with the
   prefill's. A round trip to every stage less before the first token (8-12 ms on the
   2-core machine for a 16-token hit);
3. the driver sends the rest of the prompt through the chain with the spot check folded in
   (edgellm.kv.spot, `spot_checked_prefill`): one imported position, at random, rides as
   one more row, and every stage compares its layers' recomputed K/V with the imported
   ones. On a mismatch every stage empties its session, forgets its own copy of the checked
   block and the blocks fetched for the request (`StagePrefix.reject`), the manifest's
   holders are dropped (the node is told), and the driver computes the whole prompt.

After the prefill each stage stores its layer range's full blocks not held yet, and pins
the verified blocks it fetched from others once the check passed, in a background thread
(`StagePrefix.keep`):
they land in the peer's store (shared with its backend, edgellm.kv.store), which the
worker announces, so a later split with the same ranges, a whole-model peer (through
manifests of several holders) or `infer --local` finds them.

Decisions: nothing here fails a request. A stage without IPFS, a holder that vanished
between the lookup and the fetch, a block for another layer split or for other tokens:
that stage gets fewer blocks (with a warning from the handoff code), every stage crops to
it and computes the rest. Blocks travel only between a stage and IPFS; the driver sees
counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from edgellm.cluster.disaggregated.worker import PeerKV
from edgellm.errors import ClusterError, EdgeLLMError, KuboError, KVError, ManifestRefused
from edgellm.kv import handoff
from edgellm.kv.handoff import Fetched, StageKV
from edgellm.kv.keys import chain
from edgellm.kv.manifest import KVManifest
from edgellm.kv.prefix import FETCH_WORKERS, manifest_holders
from edgellm.kv.stage import StageCache

log = logging.getLogger(__name__)

# Seconds to wait for one swarm/connect to a holder's Kubo.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class StagePrefixHit:
    """What the stages take from cached blocks for one request."""

    tokens: int = 0
    fetch_ms: float = 0.0
    # Blocks each stage could get before they agreed (stage order).
    per_stage: tuple[int, ...] = ()
    # Leading blocks every stage takes (0: none, the whole prompt is computed).
    blocks: int = 0
    # The stages' imports of those tokens, submitted and not yet read (`taken`).
    takes: tuple[Any, ...] = ()


class StagePrefix:
    """One stage actor's side: its peer's store (PeerKV) and the blocks fetched for
    requests that have not taken them yet."""

    def __init__(self, kv: PeerKV) -> None:
        self.kv = kv
        self._fetched: dict[str, tuple[Fetched, list[bytes]]] = {}
        # Verified parts fetched from other peers, per request, pinned by `keep`.
        self._remote: dict[str, list[tuple[handoff.Source, int]]] = {}
        # Per request, the imported blocks' keys and the parts of them held here: what a
        # failed spot check forgets.
        self._taken: dict[str, tuple[list[bytes], list[handoff.Source]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._storing: list[threading.Thread] = []

    def _stage_kv(self, session: StageCache) -> StageKV:
        return StageKV.of(session.kv_layout, self.kv.model_cid, self.kv.block_size)

    def fetch(self, sid: str, session: StageCache, prompt: Sequence[int], manifest: bytes) -> int:
        """Fetch and verify the prompt's leading blocks of this stage's layers (held here or
        named by `manifest`), keep them for `take`; how many blocks."""
        store = self.kv.store
        if store is None or session.position != 0:
            return 0
        kv = self._stage_kv(session)
        keys = chain(kv.chain, prompt)
        limit = (len(prompt) - 1) // kv.block_size  # the last token is always computed
        parsed = self._manifest(manifest, kv)
        plans = handoff.plan_blocks(kv, store, parsed, keys, limit)
        if not plans:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="stage-fetch")
        fetched = handoff.fetch_blocks(kv, store, prompt, keys, plans, self._pool)
        self._fetched[sid] = (fetched, keys)
        return len(fetched.blocks)

    def _manifest(self, data: bytes, kv: StageKV) -> KVManifest | None:
        if not data:
            return None
        try:
            manifest = KVManifest.from_json(data)
        except ManifestRefused as exc:
            log.warning("kv: ignoring the request's manifest: %s", exc)
            return None
        ours = (kv.chain.model_cid, kv.chain.dtype, kv.block_size)
        theirs = (manifest.model_cid, manifest.dtype, manifest.block_size)
        if theirs != ours:
            log.warning("kv: ignoring a manifest for %s, this stage is %s", theirs, ours)
            return None
        self._connect(manifest.providers)
        return manifest

    def _connect(self, providers: Sequence[str]) -> None:
        """Connect this peer's Kubo to every holder the manifest names (best effort: a
        holder out of reach costs its blocks, with the fetch's warning)."""
        store = self.kv.store
        assert store is not None
        for addr in providers:
            try:
                store.client.swarm_connect(
                    addr, timeout_s=min(CONNECT_TIMEOUT_S, store.fetch_timeout_s)
                )
            except KuboError as exc:
                log.debug("kv: cannot connect to %s: %s", addr, exc)

    def take(self, sid: str, session: StageCache, count: int) -> int:
        """Import the first `count` fetched blocks into the session; the tokens they hold."""
        fetched, keys = self._fetched.pop(sid, (Fetched(), []))
        count = min(count, len(fetched.blocks))
        if count <= 0:
            return 0
        with torch.inference_mode():
            tokens = handoff.import_blocks(session, fetched.blocks[:count])
        store = self.kv.store
        assert store is not None
        used = set(keys[:count])
        local = [s for s in fetched.local if s.key in used]
        store.touch((s.key, s.part.layer_start, s.part.layer_end) for s in local)
        self._remote[sid] = [r for r in fetched.remote if r[0].key in used]
        self._taken[sid] = (keys[:count], local)
        return tokens

    def reject(self, sid: str, session: StageCache, position: int) -> bool:
        """A failed spot check of `position`: empty the session, forget this peer's parts
        of the checked block and the request's fetched parts (never pinned); whether any
        imported part came from another peer."""
        keys, local = self._taken.pop(sid, ([], []))
        remote = self._remote.pop(sid, [])
        index = position // self.kv.block_size
        store = self.kv.store
        if store is not None and index < len(keys):
            for source in local:
                if source.key == keys[index]:
                    store.forget(source.key, source.part.layer_start, source.part.layer_end)
        session.reset()
        return bool(remote)

    def keep(self, sid: str, session: StageCache, prompt: Sequence[int], first: int) -> None:
        """After the prefill: store the prompt's full blocks from block `first` on (the
        K/V copied out now), and pin the verified blocks fetched from other peers, in a
        background thread."""
        remote = self._remote.pop(sid, [])
        store = self.kv.store
        if store is None:
            return
        kv = self._stage_kv(session)
        keys = chain(kv.chain, prompt)
        last = min(len(keys), session.position // kv.block_size)
        exported = []
        if last > first:
            exported = session.export_kv(first * kv.block_size, last * kv.block_size)
        if not exported and not remote:
            return

        def work() -> None:
            started = time.monotonic()
            try:
                handoff.adopt(store, remote)
                if exported:
                    with torch.inference_mode():
                        handoff.store_blocks(kv, exported, first, store, prompt, keys)
            except KVError as exc:  # Kubo failed: only the cache misses these blocks
                log.warning("kv: storing the stage's blocks failed: %s", exc)
            log.info(
                "kv: stored blocks %d-%d of layers [%d, %d) in %.0f ms",
                first,
                last,
                kv.layer_start,
                kv.layer_end,
                (time.monotonic() - started) * 1000.0,
            )

        thread = threading.Thread(target=work, name="stage-kv-store", daemon=True)
        thread.start()
        self._storing = [t for t in self._storing if t.is_alive()] + [thread]

    def wait_stored(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the stores `keep` started; whether all finished.
        The cluster's end calls it before the stage's process is stopped: the threads are
        daemons, and a short-lived cluster would otherwise end before a long prompt's
        blocks reach the store."""
        deadline = time.monotonic() + timeout_s
        for thread in self._storing:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._storing = [t for t in self._storing if t.is_alive()]
        return not self._storing

    def forget(self, sid: str) -> None:
        self._fetched.pop(sid, None)
        self._remote.pop(sid, None)
        self._taken.pop(sid, None)


# -- the driver's side -------------------------------------------------------------------


def load_prefix(
    calls: Any, actors: Sequence[Any], sid: str, prompt: Sequence[int], manifest: bytes
) -> StagePrefixHit:
    """Have every stage fetch the prompt's cached blocks of its layers, then submit the
    import of the count they all have; the calls after it in each stage run once its
    import has. `calls` submits and gets actor calls (RayCalls, LocalCalls)."""
    started = time.monotonic()
    handles = [calls.submit(a, "prefix_fetch", sid, list(prompt), manifest) for a in actors]
    counts, sizes = [], set()
    for handle in handles:
        try:
            count, block_size = calls.get(handle, "fetching cached KV blocks failed")
        except EdgeLLMError as exc:  # that stage computes; so must all
            log.warning("kv: a stage could not fetch cached blocks (%s); computing", exc)
            count, block_size = 0, 0
        counts.append(int(count))
        sizes.add(int(block_size))
    count = min(counts) if counts else 0
    if count and len(sizes) != 1:  # one config's block size on every peer, or no cache
        log.warning("kv: the stages' blocks hold %s tokens; computing", sorted(sizes))
        count = 0
    if counts and count < max(counts):
        log.warning(
            "kv: the stages hold %s cached blocks of the prompt; all take the first %d",
            counts,
            count,
        )
    if not count:  # a miss costs no second call (what a stage fetched goes on close)
        return StagePrefixHit(per_stage=tuple(counts))
    takes = tuple(calls.submit(a, "prefix_take", sid, count) for a in actors)
    tokens, ms = count * sizes.pop(), (time.monotonic() - started) * 1000.0
    log.info("kv: %d prompt tokens from cached blocks on every stage (%.0f ms)", tokens, ms)
    return StagePrefixHit(tokens, ms, tuple(counts), blocks=count, takes=takes)


def taken(calls: Any, hit: StagePrefixHit) -> None:
    """Read the stages' imports of `hit`: an EdgeLLMError unless each took its tokens."""
    for handle in hit.takes:
        tokens = int(calls.get(handle, "importing cached KV blocks failed"))
        if tokens != hit.tokens:
            raise ClusterError(
                f"a stage imported {tokens} cached prompt tokens, the others {hit.tokens}"
            )


def spot_checked_prefill(
    calls: Any,
    actors: Sequence[Any],
    sid: str,
    prompt: Sequence[int],
    hit: StagePrefixHit,
    position: int,
    manifest: bytes,
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """The prompt past the tokens of `hit` through the chain, with cached `position`
    recomputed in the same forward and compared by every stage for its layers: (the
    logits of the last position, ()) when all match. On a mismatch every stage rejects
    what it took, and the result is (None, the manifest's holders if any stage had used
    their blocks) for the caller to compute the whole prompt."""
    x: Any = (torch.tensor([[*prompt[hit.tokens :], prompt[position]]]), [])
    for actor in actors:
        x = calls.submit(actor, "forward_checked", sid, x, position)
    taken(calls, hit)
    logits, differences = calls.get(x, "a stage failed")
    if all(d <= tolerance for d, tolerance in differences):
        return logits, ()
    rejects = [calls.submit(a, "prefix_reject", sid, position) for a in actors]
    remote = any([calls.get(r, "a stage could not drop its cached blocks") for r in rejects])
    holders = manifest_holders(manifest) if remote and manifest else ()
    log.warning(
        "kv: spot check of cached position %d failed on the stages (K/V differ by %s of "
        "their scale): computing the whole prompt; dropped %s",
        position,
        ", ".join(f"{d:.3g}" for d, _ in differences),
        ", ".join(holders) or "this peer's copies of the block",
    )
    return None, holders


def keep_prompt(calls: Any, actors: Sequence[Any], sid: str, prompt: Sequence[int], first: int):
    """Have every stage store its blocks of the prompt (after its prefill). Fire and
    forget: a stage's actor runs it before the session's next call."""
    for actor in actors:
        try:
            calls.submit(actor, "prefix_keep", sid, list(prompt), first)
        except EdgeLLMError as exc:  # the next forward reports a lost stage
            log.debug("kv: asking a stage to keep its blocks: %s", exc)
