"""The torch engine's prefix cache over the block store.

Before a prefill: compute the prompt's chained keys, find the longest run of leading blocks
that every stage can get (held here, or named by the request's manifest), fetch and verify
them, and append them to each stage's session; the engine then computes only the rest.
The whole prompt is never taken from the cache: at least its last token is computed, for
the logits. One imported position, at random, is recomputed in that computation's forward
and compared (kv/spot.py, `PrefixCache.prefill`); a mismatch drops the hit and every holder
the request's manifest named, for the life of this backend, and the prompt is computed.
After the prefill, the prompt's full blocks that are not held yet are stored in a
background thread that overlaps decoding; the request waits for it before its last chunk.
Blocks fetched from other peers are pinned and indexed here (and so announced) only once
the request that used them has finished without harm: a request that fails or is cancelled
leaves them unindexed, for Kubo's garbage collector.

Anything wrong with Kubo or a block costs a warning and a recompute, never the request.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgellm.config import KVConfig
from edgellm.errors import KuboError, KVError, ManifestRefused
from edgellm.kv import handoff, spot
from edgellm.kv.block import KV
from edgellm.kv.handoff import Fetched, StageKV
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.keys import chain
from edgellm.kv.manifest import BlockRef, KVManifest
from edgellm.kv.stage import KVLayout, StageCache
from edgellm.kv.store import KVStore
from edgellm.models.manifest import Manifest

log = logging.getLogger(__name__)

# Blocks fetched at once: bitswap keeps that many wants in flight. On two cores, 98 blocks
# over bitswap took ~760 ms with 8, ~640 ms with 16 to 64.
FETCH_WORKERS = 32


@dataclass(frozen=True)
class PrefixHit:
    """What the lookup gave one request."""

    tokens: int = 0  # prompt tokens taken from the cache
    fetch_ms: float = 0.0  # lookup + fetch + verify + import
    keys: tuple[bytes, ...] = ()
    # Parts fetched from other peers (with sizes), pinned here after the prefill.
    remote: tuple[tuple[handoff.Source, int], ...] = ()
    # Parts held here that it used, marked used (LRU) by the store job: a save of the
    # index is not worth its time before the first token.
    used: tuple[tuple[bytes, int, int], ...] = ()
    # The spot check the prefill of the rest runs (None: off, or nothing imported).
    spot: SpotCheck | None = None
    # Kubo peer ids of the holders a failed spot check dropped (the node is told).
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpotCheck:
    """The imported position to recompute, and what a mismatch drops."""

    position: int
    count: int  # blocks imported
    fetched: tuple[Fetched, ...]
    manifest: KVManifest | None


@dataclass
class StoreJob:
    """A running store of one prompt's blocks; `wait` returns the time it took."""

    thread: threading.Thread | None = None
    ms: float = 0.0
    # The prompt's stored blocks, every stage's parts merged (None until done, or failed).
    manifest: KVManifest | None = None
    # Set once the request is over: `harmless` says whether it finished without harm, so
    # the blocks it fetched from others may be adopted.
    over: threading.Event = field(default_factory=threading.Event)
    harmless: bool = False

    def finish(self, harmless: bool) -> None:
        """Say how the request ended (the thread adopts fetched blocks only if harmless)."""
        self.harmless = harmless
        self.over.set()

    def wait(self) -> float:
        if self.thread is not None:
            self.thread.join()
        return self.ms


class PrefixCache:
    def __init__(
        self,
        store: KVStore,
        model_cid: str,
        block_size: int,
        spot_check: bool = True,
    ) -> None:
        self.store = store
        self.model_cid = model_cid
        self.block_size = block_size
        self.spot_check = spot_check
        self._rng = random.SystemRandom()  # a holder must not predict the checked block
        # Kubo peer ids of holders whose blocks failed a spot check: their manifests are
        # ignored for the life of this backend.
        self.dropped: set[str] = set()
        self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="kv-fetch")

    @classmethod
    def open(cls, config: KVConfig, model_dir: Path) -> PrefixCache | None:
        """The prefix cache for the model in `model_dir`, or None when no Kubo API is
        configured. Each model keeps its own index (and cap) under `<kv dir>/<weights CID>`."""
        if not config.enabled:
            log.debug("kv: no IPFS API configured; the prefix cache is off")
            return None
        if config.dir is None:
            raise ValueError("kv.dir is not set (load_config sets <data_dir>/kv)")
        model_cid = Manifest.read(model_dir).weights_cid
        client = KuboClient(config.ipfs_api, gateway=config.ipfs_gateway)
        try:
            peer = client.id().get("ID", "?")
            log.info(
                "kv: prefix cache on, Kubo %s (peer %s), blocks read through %s",
                client.api,
                peer,
                f"the gateway {client.gateway}" if client.gateway else "the RPC API",
            )
        except KuboError as exc:
            log.warning(
                "kv: Kubo at %s is not answering (%s); computing until it does", client.api, exc
            )
        store = KVStore(
            client, Path(config.dir) / model_cid, config.max_store_mb << 20, config.fetch_timeout_s
        )
        try:
            gone, recovered = store.reconcile(model_cid)
            if gone or recovered:
                log.info(
                    "kv: index reconciled with Kubo's pins: %d parts no longer pinned, "
                    "%d pinned blocks re-indexed",
                    gone,
                    recovered,
                )
        except KuboError as exc:
            log.warning("kv: cannot reconcile the block index with Kubo's pins: %s", exc)
        return cls(store, model_cid, config.block_size, config.spot_check)

    def _kv(self, session: StageCache) -> StageKV:
        return StageKV.of(session.kv_layout, self.model_cid, self.block_size)

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
            log.warning("kv: ignoring a manifest for %s, this model is %s", theirs, ours)
            return None
        dropped = self.dropped.intersection(holder_ids(manifest.providers))
        if dropped:
            log.warning(
                "kv: ignoring a manifest from %s, dropped after a failed spot check",
                ", ".join(sorted(dropped)),
            )
            return None
        # One deadline for every provider together: a manifest's providers cost at most
        # fetch_timeout_s before the fetch, however many there are.
        deadline = time.monotonic() + self.store.fetch_timeout_s
        for addr in manifest.providers:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("kv: no time left to connect to manifest provider %s", addr)
                continue
            try:
                self.store.client.swarm_connect(addr, timeout_s=left)
            except KuboError as exc:
                log.warning("kv: cannot connect to manifest provider %s: %s", addr, exc)
        return manifest

    def load(
        self, sessions: Sequence[StageCache], token_ids: Sequence[int], manifest: bytes = b""
    ) -> PrefixHit:
        """Fill fresh sessions with the longest usable cached prefix of `token_ids`."""
        started = time.monotonic()
        kvs = [self._kv(s) for s in sessions]
        keys = tuple(chain(kvs[0].chain, token_ids))
        limit = (len(token_ids) - 1) // self.block_size  # the last token is always computed
        parsed = self._manifest(manifest, kvs[0])
        plans = [handoff.plan_blocks(kv, self.store, parsed, keys, limit) for kv in kvs]
        count = min(len(p) for p in plans)
        if count == 0:
            return PrefixHit(keys=keys)
        fetched: list[Fetched] = []
        for kv, plan in zip(kvs, plans, strict=True):
            got = handoff.fetch_blocks(kv, self.store, token_ids, keys, plan[:count], self._pool)
            fetched.append(got)
            count = min(count, len(got.blocks))
            if count == 0:
                break
        if count == 0:
            return PrefixHit(fetch_ms=(time.monotonic() - started) * 1000.0, keys=keys)
        for session, got in zip(sessions, fetched, strict=True):
            handoff.import_blocks(session, got.blocks[:count])
        check = None
        if self.spot_check:
            position = self._rng.randrange(count * self.block_size)
            check = SpotCheck(position, count, tuple(fetched), parsed)
        used = tuple(
            (s.key, s.part.layer_start, s.part.layer_end)
            for got in fetched
            for s in got.local
            if s.key in keys[:count]
        )
        remote = tuple(r for got in fetched for r in got.remote if r[0].key in keys[:count])
        ms = (time.monotonic() - started) * 1000.0
        log.info(
            "kv: %d of %d prompt tokens from cached blocks (%.0f ms)",
            count * self.block_size,
            len(token_ids),
            ms,
        )
        return PrefixHit(count * self.block_size, ms, keys, remote, used, check)

    def prefill(
        self,
        sessions: Sequence[StageCache],
        token_ids: Sequence[int],
        hit: PrefixHit,
        check: SpotCheck,
    ) -> tuple[torch.Tensor | None, PrefixHit]:
        """Compute the prompt past `hit` with its spot `check` folded in: the logits of the
        last position and the hit. On a mismatch: empty the sessions, forget the checked
        block's local parts, drop the manifest's holders, and return (None, an empty hit)
        for the caller to compute the whole prompt."""
        checked: Sequence[spot.SpotSession] = sessions  # type: ignore[assignment]
        logits, difference = spot.prefill(checked, token_ids, check.position)
        judged = self.judge(hit, check, difference, sessions[0].kv_layout.dtype)
        if judged is hit:
            return logits, hit
        for session in checked:
            session.reset()
        return None, judged

    def judge(
        self, hit: PrefixHit, check: SpotCheck, difference: float, dtype: torch.dtype
    ) -> PrefixHit:
        """`hit` when the recompute of `check.position` differs from the imported K/V by
        at most the dtype's tolerance; otherwise forget the checked block's local parts,
        drop the manifest's holders, and return an empty hit naming them (the caller
        computes the whole prompt)."""
        if difference <= spot.tolerance(dtype):
            return hit
        index = check.position // self.block_size
        remote = any(got.remote for got in check.fetched)
        manifest = check.manifest
        holders = set(holder_ids(manifest.providers)) if manifest and remote else set()
        self.dropped |= holders
        log.warning(
            "kv: spot check of cached block %d (position %d) failed (K/V differ by %.3g of "
            "their scale): computing the whole prompt; dropped %s for this backend's life",
            index,
            check.position,
            difference,
            ", ".join(sorted(holders)) or "this peer's copy of the block",
        )
        for got in check.fetched:
            for source in got.local:
                if source.key == hit.keys[index]:
                    self.store.forget(source.key, source.part.layer_start, source.part.layer_end)
        return PrefixHit(fetch_ms=hit.fetch_ms, keys=hit.keys, dropped=tuple(sorted(holders)))

    def store_async(
        self, sessions: Sequence[StageCache], token_ids: Sequence[int], hit: PrefixHit
    ) -> StoreJob:
        """Store the prompt's full blocks not held yet, in the background. The K/V are
        copied out of the sessions now, so decoding can go on meanwhile."""
        keys = hit.keys or tuple(chain(self._kv(sessions[0]).chain, token_ids))
        first = hit.tokens // self.block_size
        last = min(len(keys), len(token_ids) // self.block_size)
        job = StoreJob()
        if last <= first and not hit.remote and not hit.used:
            return job
        exported: list[tuple[StageKV, list[KV]]] = []
        if last > first:
            span = (first * self.block_size, last * self.block_size)
            exported = [(self._kv(s), s.export_kv(*span)) for s in sessions]

        def work() -> None:
            started = time.monotonic()
            try:
                with torch.inference_mode():
                    self.store.touch(hit.used)
                    stored = [
                        handoff.store_blocks(kv, layers, first, self.store, token_ids, keys)
                        for kv, layers in exported
                    ]
                    if exported:
                        job.manifest = merge(exported[0][0], stored)
                if hit.remote:
                    job.over.wait()
                    if job.harmless:
                        self._adopt(hit)
            except KVError as exc:  # Kubo failed: the request goes on without these blocks
                log.warning("kv: storing the prompt's blocks failed: %s", exc)
            finally:
                job.ms = (time.monotonic() - started) * 1000.0

        job.thread = threading.Thread(target=work, name="kv-store", daemon=True)
        job.thread.start()
        return job

    def _adopt(self, hit: PrefixHit) -> None:
        for source, size in hit.remote:
            part = source.part
            if not self.store.has(source.key, part.layer_start, part.layer_end):
                self.store.adopt(source.key, part, size)

    def manifest_for(
        self, layout: KVLayout, token_ids: Sequence[int], providers: Sequence[str] = ()
    ) -> KVManifest:
        """A manifest of the leading blocks of `token_ids` this peer holds for the layers
        of `layout` (what a peer hands to another for P/D, or announces)."""
        kv = StageKV.of(layout, self.model_cid, self.block_size)
        keys = chain(kv.chain, token_ids)
        plans = handoff.plan_blocks(kv, self.store, None, keys, len(keys))
        blocks = [
            BlockRef(plan[0].key, index * self.block_size, tuple(s.part for s in plan))
            for index, plan in enumerate(plans)
        ]
        return merge(kv, [blocks], providers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.store.client.close()


def holder_ids(providers: Sequence[str]) -> list[str]:
    """The Kubo peer ids a manifest's provider multiaddrs end in (/p2p/<id>)."""
    return [p.rsplit("/p2p/", 1)[1] for p in providers if "/p2p/" in p]


def manifest_holders(data: bytes) -> tuple[str, ...]:
    """The Kubo peer ids of a manifest's providers, sorted, once each (what a failed
    spot check drops); none for a manifest that is refused (nothing came from it)."""
    try:
        return tuple(sorted(set(holder_ids(KVManifest.from_json(data).providers))))
    except ManifestRefused:
        return ()


def merge(kv: StageKV, blocks: Sequence[Sequence[BlockRef]], providers: Sequence[str] = ()):
    """One manifest for the blocks every stage stored (parts merged per key)."""
    merged: dict[bytes, BlockRef] = {}
    for stage_blocks in blocks:
        for ref in stage_blocks:
            old = merged.get(ref.key)
            parts = (old.parts if old else ()) + ref.parts
            merged[ref.key] = BlockRef(ref.key, ref.position, parts)
    ordered = tuple(sorted(merged.values(), key=lambda b: b.position))
    chain_spec = kv.chain
    return KVManifest(
        chain_spec.model_cid, chain_spec.dtype, chain_spec.block_size, ordered, tuple(providers)
    )
