"""The stage actors' side of P/D (edgellm.cluster.actor.StageActor runs it on each peer):
a peer's KV block store in its own Kubo, storing the prompt's blocks on the prefill peer
and fetching them into the session on the decode peer.

The decode peer spot-checks what it took (edgellm.kv.spot): one imported position, at
random, rides as one more row of the forward that computes the rest of the prompt (or
alone, when nothing is left to compute). On a mismatch it computes the whole prompt,
keeps none of the prefill peer's blocks (they are adopted, and so announced, only after a
passed check) and names the prefill peer's IPFS node in `Loaded.dropped`. The first
token's logits come from the prefill peer and no block check can vouch for them: the
check protects the decode and the swarm's cache, not that one token.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from edgellm.cluster.disaggregated.direct import Getter, getters
from edgellm.cluster.disaggregated.messages import Handoff, Loaded
from edgellm.config import load_config
from edgellm.engine.torch.stage import StageSession
from edgellm.errors import InvalidRequest, KuboError, KVError, ManifestRefused
from edgellm.kv import block as blockfmt
from edgellm.kv import handoff as kvhandoff
from edgellm.kv import spot
from edgellm.kv.buffers import BufferPool
from edgellm.kv.handoff import Bytes, StageKV
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.keys import ChainSpec, chain
from edgellm.kv.manifest import KVManifest, PartRef
from edgellm.kv.prefix import FETCH_WORKERS, manifest_holders, merge
from edgellm.kv.stage import KVLayout
from edgellm.kv.store import KVStore

log = logging.getLogger(__name__)

# Where a stage actor keeps its block index (one directory per model CID under it); the
# cluster manager sets it for its Ray node to its backend's KV directory, so the stage's
# blocks are the peer's (edgellm.kv.store). Default: <kv dir>.
STAGE_KV_DIR_ENV = "EDGELLM_STAGE_KV_DIR"
# IPFS addresses of the prefill peer a manifest names at most.
MAX_PROVIDERS = 16
# Seconds to wait for one swarm/connect to the prefill peer's Kubo.
CONNECT_TIMEOUT_S = 5.0
# The handed-over blocks' bytes travel to the decode peer directly (through Ray's object
# stores, 128 MiB on each node: cluster/node.py) up to this size; a longer prompt's blocks
# go through IPFS only. 1,568 fp32 tokens of the embedded model are 72.7 MB.
DIRECT_MAX_BYTES = 96 * 1024 * 1024
# Which imported position the decode peer checks: the prefill peer must not predict it.
_RNG = random.SystemRandom()


class _Collect(logging.Handler):
    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """Warnings the `edgellm` loggers emit on this thread meanwhile (they are logged too)."""
    handler = _Collect(threading.get_ident())
    root = logging.getLogger("edgellm")
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


@dataclass
class _Pending:
    """A handoff's parts after it: the new ones to store in Kubo (key, layer_start,
    layer_end, bytes) with the refs the manifest named, and the held ones encoded again
    for the decode peer, whose buffers come back with the new ones'."""

    new: list[tuple[bytes, int, int, Bytes]]
    refs: list[PartRef]
    held: list[Bytes]

    def spent(self) -> list[Bytes]:
        return [data for *_, data in self.new] + self.held


class PeerKV:
    """One peer's side of P/D: its block store in its own Kubo (None: no IPFS here)."""

    def __init__(
        self, store: KVStore | None, model_cid: str, block_size: int, spot_check: bool = True
    ) -> None:
        self.store = store
        self.model_cid = model_cid
        self.block_size = block_size
        # Whether the decode peer spot-checks the blocks it takes (kv.spot_check).
        self.spot_check = spot_check
        self._pool: ThreadPoolExecutor | None = None
        self._storing: threading.Thread | None = None
        # The last handoff's parts (new ones with their refs, held ones encoded again),
        # until store_pending stores the new ones and gives the buffers back.
        self._pending: _Pending | None = None
        # A prefill peer's encode buffers (keep_buffers); None: fresh memory per handoff.
        self.buffers: BufferPool | None = None

    @classmethod
    def from_config(cls, model_cid: str) -> PeerKV:
        """The store this process's configuration names (EDGELLM_IPFS_API, kv: section)."""
        config = load_config().kv
        if not config.enabled:
            return cls(None, model_cid, config.block_size, config.spot_check)
        base = os.environ.get(STAGE_KV_DIR_ENV) or str(config.dir or ".")
        client = KuboClient(config.ipfs_api, gateway=config.ipfs_gateway)
        store = KVStore(
            client, Path(base) / model_cid, config.max_store_mb << 20, config.fetch_timeout_s
        )
        return cls(store, model_cid, config.block_size, config.spot_check)

    def _chain(self, session: StageSession, block_size: int) -> ChainSpec:
        return ChainSpec(self.model_cid, blockfmt.dtype_name(session.kv_layout.dtype), block_size)

    def providers(self) -> tuple[str, ...]:
        """This peer's IPFS addresses, each ending in /p2p/<its Kubo peer id>."""
        if self.store is None:
            return ()
        ident = self.store.client.id()
        peer = ident.get("ID")
        out = []
        for addr in ident.get("Addresses") or ():
            if not isinstance(addr, str) or not addr or len(addr) > 512:
                continue
            if "/p2p/" not in addr and isinstance(peer, str):
                addr = f"{addr}/p2p/{peer}"
            out.append(addr)
        return tuple(out[:MAX_PROVIDERS])

    # -- prefill peer ------------------------------------------------------------------

    def keep_buffers(self, layout: KVLayout) -> int:
        """At a prefill peer's load: fill a pool of encode buffers (kv.buffers) with room
        for a handoff of up to DIRECT_MAX_BYTES, the buffers sized for this stage's largest
        block part; returns their count (0 without a store: nothing is handed over). The
        handed-over bytes must be copied out before a buffer is reused, as Ray's object
        store does: an in-process decode side would read them where they lie."""
        if self.store is None:
            return 0
        kv = StageKV.of(layout, self.model_cid, self.block_size)
        per_layer = blockfmt.layer_bytes(kv.block_size, kv.kv_heads, kv.head_dim, kv.dtype)
        largest = max(end - start for start, end in kv.groups()) * per_layer
        if self.buffers is None:
            self.buffers = BufferPool.for_blocks(largest)
        return self.buffers.fill(DIRECT_MAX_BYTES)

    def store_prompt(self, session: StageSession, token_ids: Sequence[int]) -> Handoff:
        """Hand over the full blocks of a prefilled session: their manifest, and their
        bytes by CID for the decode peer to take directly (verified there by CID, as a
        Kubo fetch is). The blocks go into this peer's Kubo in the background, for the
        swarm's cache and a failover's new decode peer. Without a store, or when the
        blocks cannot be encoded for want of Kubo, the manifest is empty (with a
        warning); what else raises fails the handoff, and the driver has the decode peer
        compute."""
        with _warnings() as warned:
            started = time.monotonic()
            handoff, tokens, direct = b"", 0, None
            if self.store is None:
                log.warning(
                    "kv: the prefill peer has no IPFS node (EDGELLM_IPFS_API unset); "
                    "the decode peer computes the prompt"
                )
            else:
                try:
                    handoff, tokens, direct = self._encode(session, token_ids)
                except KVError as exc:  # Kubo failed: the decode peer computes instead
                    log.warning(
                        "kv: the prefill peer could not store the prompt's blocks (%s); "
                        "the decode peer computes the prompt",
                        exc,
                    )
            ms = (time.monotonic() - started) * 1000.0
        return Handoff(handoff, ms, tokens, tuple(warned), direct)

    def _encode(
        self, session: StageSession, token_ids: Sequence[int]
    ) -> tuple[bytes, int, dict[str, Bytes] | None]:
        """(manifest, tokens it covers, every part's bytes by CID or None when they are
        over DIRECT_MAX_BYTES); the new parts' store is started in the background."""
        assert self.store is not None
        kv = StageKV.of(session.kv_layout, self.model_cid, self.block_size)
        keys = chain(kv.chain, token_ids)
        alloc = self.buffers.take if self.buffers is not None else bytearray
        with torch.inference_mode():
            encoded = kvhandoff.encode_session(
                session, self.store, self.model_cid, self.block_size, token_ids, keys, alloc
            )
        if not encoded.chosen:
            return b"", 0, None
        new_refs = encoded.local_refs()
        refs = encoded.refs(new_refs)
        manifest = merge(kv, [refs], self.providers())
        self._store_later(_Pending(encoded.new, new_refs, [*encoded.held]))
        # Every block's bytes, those this peer held already too (encoded again: the same
        # K/V give the same bytes, and a part whose CID differs is fetched from Kubo).
        direct = encoded.by_cid(new_refs)
        if sum(map(len, direct.values())) > DIRECT_MAX_BYTES:
            direct = None
        return manifest.to_json(), len(refs) * self.block_size, direct

    def _store_later(self, pending: _Pending) -> None:
        """Hold the handoff's parts for `store_pending` (an earlier handoff's still pending
        is started first: nothing handed over goes unstored)."""
        self.store_pending()
        if self.store is not None:
            self._pending = pending

    def store_pending(self) -> None:
        """Put the last handoff's new parts into this peer's Kubo, in a thread. The driver
        asks once the decode peer has taken them (on a shared host the store would
        compete with that), the cluster's end at the latest (`wait_stored`). The CIDs
        Kubo returns must be the ones the manifest named (the encoding is canonical),
        else a warning."""
        pending, self._pending = self._pending, None
        store, before, buffers = self.store, self._storing, self.buffers
        if pending is None or store is None:
            return
        if not pending.new:  # every part was held already: only buffers to give back
            if buffers is not None:
                buffers.give(pending.spent())
            return

        def work() -> None:
            if before is not None:
                before.join()  # one store at a time, in order
            started = time.monotonic()
            try:
                put = store.put_many(pending.new)
            except KVError as exc:  # the decode peer has the bytes; the cache misses them
                log.warning("kv: storing the prompt's blocks in this peer's Kubo failed: %s", exc)
                return
            finally:
                if buffers is not None:  # nothing reads the parts any more
                    buffers.give(pending.spent())
            wrong = [p.cid for p, r in zip(put, pending.refs, strict=True) if p.cid != r.cid]
            if wrong:
                log.warning("kv: Kubo named %d handed-over blocks otherwise: %s", len(wrong), wrong)
            log.info(
                "kv: stored %d handed-over block parts in %.0f ms",
                len(put),
                (time.monotonic() - started) * 1000.0,
            )

        thread = threading.Thread(target=work, name="pd-kv-store", daemon=True)
        thread.start()
        self._storing = thread

    def wait_stored(self, timeout_s: float) -> bool:
        """Store what is pending, then wait up to `timeout_s` for it; whether it finished
        (the cluster's end asks before it stops the stage: the thread is a daemon)."""
        self.store_pending()
        thread = self._storing
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    # -- decode peer -------------------------------------------------------------------

    def load(
        self,
        session: StageSession,
        handoff: Handoff,
        token_ids: Sequence[int],
        logits: bool = False,
    ) -> Loaded:
        """Fill a fresh session with the prompt: P's blocks as far as they check out, the
        rest computed here (with `logits`, at least the last position: the first token's
        logits come from here). Only a failure of the computation itself raises."""
        if session.position != 0:
            raise InvalidRequest("the decode session already holds tokens")
        with _warnings() as warned:
            started = time.monotonic()
            cached, fetched = 0, kvhandoff.Fetched()
            if not handoff.manifest:
                pass  # P said why (its warnings travel along)
            elif self.store is None:
                log.warning(
                    "kv: the decode peer has no IPFS node (EDGELLM_IPFS_API unset); "
                    "computing the prompt's %d tokens",
                    len(token_ids),
                )
            else:
                try:
                    direct = getters(handoff.blocks, self.store.fetch_timeout_s)
                    cached, fetched = self._fetch(
                        session, handoff.manifest, token_ids, logits, direct
                    )
                except Exception as exc:  # noqa: BLE001 - a peer's blocks must never fail us
                    log.warning(
                        "kv: fetching the prefill peer's blocks failed (%s); "
                        "computing the whole prompt",
                        exc,
                    )
                    session.reset()
                    cached = 0
            fetch_ms = (time.monotonic() - started) * 1000.0 if handoff.manifest else 0.0
            out, passed, dropped = None, True, ()
            if cached and self.spot_check:
                out, passed, dropped = self._checked(session, token_ids, cached, handoff.manifest)
            if not passed:
                cached = 0  # the session was emptied; nothing fetched is kept
            elif cached:
                self._keep(fetched)
            rest = list(token_ids[cached:])
            if rest and out is None:
                out = session.forward(torch.tensor([rest], dtype=torch.long))
        return Loaded(
            cached,
            fetch_ms,
            handoff.store_ms,
            len(rest),
            out,
            handoff.warnings + tuple(warned),
            dropped,
            len(fetched.direct) if cached else 0,
        )

    def _checked(
        self, session: StageSession, token_ids: Sequence[int], cached: int, manifest: bytes
    ) -> tuple[torch.Tensor | None, bool, tuple[str, ...]]:
        """The prompt past `cached` with one imported position recomputed in the same
        forward: (the last position's logits, None when nothing was left to compute;
        whether the check passed; if not, the prefill peer's IPFS ids, and the session
        is emptied)."""
        position = _RNG.randrange(cached)
        rest = list(token_ids[cached:])
        rows = torch.tensor([[*rest, token_ids[position]]], dtype=torch.long)
        out = session.forward(rows, logits=bool(rest), check=position)
        difference = session.difference(position)
        if difference <= spot.tolerance(session.kv_layout.dtype):
            return (out if rest else None), True, ()
        dropped = manifest_holders(manifest)
        log.warning(
            "kv: spot check of the prefill peer's block at position %d failed (K/V differ "
            "by %.3g of their scale): computing the whole prompt; dropped %s",
            position,
            difference,
            ", ".join(dropped) or "the prefill peer",
        )
        session.reset()
        return None, False, dropped

    def _fetch(
        self,
        session: StageSession,
        data: bytes,
        token_ids: Sequence[int],
        logits: bool,
        direct: Mapping[str, Getter],
    ) -> tuple[int, kvhandoff.Fetched]:
        """Import P's verified blocks into the session, those `direct` names (P's bytes,
        a getter per CID) taken from there, the rest through IPFS: (tokens, what was
        fetched)."""
        assert self.store is not None
        none = kvhandoff.Fetched()
        try:
            manifest = KVManifest.from_json(data)
        except ManifestRefused as exc:
            log.warning("kv: refusing the prefill peer's manifest: %s; computing the prompt", exc)
            return 0, none
        spec = self._chain(session, manifest.block_size)
        theirs = (manifest.model_cid, manifest.dtype)
        if theirs != (spec.model_cid, spec.dtype):
            log.warning(
                "kv: refusing a manifest for model %s (%s); this request is %s (%s); "
                "computing the prompt",
                *theirs,
                spec.model_cid,
                spec.dtype,
            )
            return 0, none
        if not {p.cid for b in manifest.blocks for p in b.parts} <= direct.keys():
            self._connect(manifest.providers)
        keys = chain(spec, token_ids)
        limit = len(keys)
        if logits:  # leave the last position to compute
            limit = min(limit, (len(token_ids) - 1) // spec.block_size)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="pd-fetch")
        with torch.inference_mode():
            fetched = kvhandoff.fetch_into(
                session,
                self.store,
                manifest,
                self.model_cid,
                spec.block_size,
                token_ids,
                keys,
                limit,
                self._pool,
                direct,
            )
        cached = len(fetched.blocks) * spec.block_size
        log.info(
            "kv: %d of %d prompt tokens from the prefill peer's blocks (%d parts handed over "
            "directly)",
            cached,
            len(token_ids),
            len(fetched.direct),
        )
        return cached, fetched

    def _keep(self, fetched: kvhandoff.Fetched) -> None:
        """Pin and index the verified blocks taken from P (in the background), so this
        peer announces and serves them too."""
        store, remote, direct = self.store, list(fetched.remote), list(fetched.direct)
        if store is None or not (remote or direct):
            return

        def work() -> None:
            try:
                kvhandoff.adopt(store, remote, direct)
            except KVError as exc:  # only the cache misses them
                log.warning("kv: keeping the prefill peer's blocks failed: %s", exc)

        threading.Thread(target=work, name="pd-kv-keep", daemon=True).start()

    def _connect(self, providers: Sequence[str]) -> None:
        """Connect this peer's Kubo to the prefill peer's (any one address will do)."""
        assert self.store is not None
        errors = []
        for addr in providers:
            try:
                self.store.client.swarm_connect(
                    addr, timeout_s=min(CONNECT_TIMEOUT_S, self.store.fetch_timeout_s)
                )
                return
            except KuboError as exc:
                errors.append(f"{addr}: {exc}")
        if errors:
            log.warning(
                "kv: cannot connect to the prefill peer's IPFS node (%s); fetching anyway",
                "; ".join(errors)[-600:],
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.client.close()
