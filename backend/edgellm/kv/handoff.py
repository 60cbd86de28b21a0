"""Moving KV blocks between one stage's session and the block store.

These are the pieces both the prefix cache and prefill/decode disaggregation use:

- `store_blocks`: after a prefill, put a session's full blocks (those not held yet) and
  return their manifest entries ("prefill and store, return manifest");
- `plan_blocks` + `fetch_blocks` + `import_blocks`: find the leading blocks that local or
  manifest parts cover, fetch and verify them, append them to a fresh session
  ("fetch a manifest into a session"); `fetch_into` does all three for one stage.

A session is anything that satisfies `edgellm.kv.stage.StageCache`.

A fetch stops at the first block that cannot be fetched or is refused, with a warning
saying why; the caller computes from there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from edgellm.errors import BlockRefused, KVError
from edgellm.kv import block as blockfmt
from edgellm.kv.block import KV, BlockMeta, BlockTensors
from edgellm.kv.keys import ChainSpec, parent_of
from edgellm.kv.manifest import BlockRef, KVManifest, PartRef
from edgellm.kv.stage import KVLayout, StageCache
from edgellm.kv.store import KVStore
from edgellm.models.cid import raw_cid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageKV:
    """How one stage's blocks look: its chain, layers, and tensor shapes."""

    chain: ChainSpec
    layer_start: int
    layer_end: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def of(cls, layout: KVLayout, model_cid: str, block_size: int) -> StageKV:
        chain = ChainSpec(model_cid, blockfmt.dtype_name(layout.dtype), block_size)
        return cls(
            chain,
            layout.layer_start,
            layout.layer_end,
            layout.kv_heads,
            layout.head_dim,
            layout.dtype,
        )

    @property
    def block_size(self) -> int:
        return self.chain.block_size

    def groups(self) -> list[tuple[int, int]]:
        per_layer = blockfmt.layer_bytes(self.block_size, self.kv_heads, self.head_dim, self.dtype)
        return blockfmt.layer_groups(self.layer_start, self.layer_end, per_layer)

    def meta(
        self, keys: Sequence[bytes], index: int, token_ids: Sequence[int], start: int, end: int
    ) -> BlockMeta:
        size = self.block_size
        return BlockMeta(
            model_cid=self.chain.model_cid,
            layer_start=start,
            layer_end=end,
            dtype=self.chain.dtype,
            block_size=size,
            position=index * size,
            token_ids=tuple(token_ids[index * size : (index + 1) * size]),
            key=keys[index],
            parent=parent_of(keys, index),
        )


# -- store ------------------------------------------------------------------------------


# A part's bytes as the encoder or a transport hands them over (none is written to).
Bytes = bytes | bytearray | memoryview
# Where an encoder writes a part of n bytes (bytearray, or a kv.buffers.BufferPool's take).
Alloc = Callable[[int], bytearray | memoryview]
_T = TypeVar("_T")
_R = TypeVar("_R")
# Encoding and hashing blocks: torch's copies and hashlib release the GIL, so a thread
# per core (98 blocks of a 1,568-token prompt: encode ~60 ms and CIDs ~38 ms on one core
# of the 2-core machine).
_POOL = ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))), thread_name_prefix="kv-encode")


def parallel(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """`fn` over `items` in the encoding threads, results in order."""
    if len(items) < 2:
        return [fn(item) for item in items]
    return list(_POOL.map(fn, items))


@dataclass
class Encoded:
    """A prefilled session's full blocks, encoded: per block, each layer group's part,
    either held by the store already (its PartRef) or new (an index into `new`)."""

    first: int
    keys: Sequence[bytes]
    block_size: int
    chosen: list[list[PartRef | int]] = field(default_factory=list)
    # (key, layer_start, layer_end, bytes) of every part the store does not hold.
    new: list[tuple[bytes, int, int, Bytes]] = field(default_factory=list)
    # With `encode_held`: the bytes of the parts the store holds, encoded again (the
    # same bytes, so the same CID, when the K/V are bitwise the same).
    held: list[Bytes] = field(default_factory=list)

    def refs(self, new_refs: Sequence[PartRef]) -> list[BlockRef]:
        """The manifest entries of every block, the new parts named by `new_refs`."""
        size = self.block_size
        return [
            BlockRef(
                self.keys[self.first + offset],
                (self.first + offset) * size,
                tuple(new_refs[p] if isinstance(p, int) else p for p in row),
            )
            for offset, row in enumerate(self.chosen)
        ]

    def local_refs(self) -> list[PartRef]:
        """The new parts' refs with CIDs computed here (as Kubo's block/put names them)."""
        cids = parallel(raw_cid, [data for *_, data in self.new])
        return [
            PartRef(start, end, cid, len(data))
            for (_, start, end, data), cid in zip(self.new, cids, strict=True)
        ]

    def by_cid(self, new_refs: Sequence[PartRef]) -> dict[str, Bytes]:
        """Every encoded part's bytes by CID, in block order (the new parts named by
        `new_refs`, the held ones encoded again by the CID of those bytes)."""
        held = iter(zip(self.held, parallel(raw_cid, self.held), strict=True))
        out: dict[str, Bytes] = {}
        for row in self.chosen:
            for part in row:
                if isinstance(part, int):
                    out[new_refs[part].cid] = self.new[part][3]
                elif self.held:
                    data, cid = next(held)
                    out[cid] = data
        return out


def encode_blocks(
    kv: StageKV,
    exported: Sequence[KV],
    first: int,
    store: KVStore,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    encode_held: bool = False,
    alloc: Alloc | None = None,
) -> Encoded:
    """Encode blocks first, first+1, ... whose K/V are in `exported` (per layer, positions
    from first * block_size on, as StageCache.export_kv returns them); parts the store
    holds already are named, and encoded again only with `encode_held` (into `held`).
    With `alloc`, each part is encoded into the memory it gives (no immutable copy)."""
    size = kv.block_size
    count = exported[0][0].shape[1] // size if exported else 0
    out = Encoded(first, keys, size)
    # Per part to encode: whether it is held, and its (key, start, end, layers' slices).
    jobs: list[tuple[bool, tuple[bytes, int, int], BlockMeta, list[KV]]] = []
    new_parts = 0
    for offset in range(count):
        index = first + offset
        held = {(p.layer_start, p.layer_end): p for p in store.parts(keys[index])}
        row: list[PartRef | int] = []
        for start, end in kv.groups():
            if (start, end) in held:
                row.append(held[(start, end)])
                if not encode_held:
                    continue
            else:
                row.append(new_parts)  # its index in `new`
                new_parts += 1
            a, b = offset * size, (offset + 1) * size
            layers = [
                (k[:, a:b], v[:, a:b])
                for k, v in exported[start - kv.layer_start : end - kv.layer_start]
            ]
            meta = kv.meta(keys, index, token_ids, start, end)
            jobs.append(((start, end) in held, (keys[index], start, end), meta, layers))
        out.chosen.append(row)
    if alloc is None:
        encoded = parallel(lambda job: blockfmt.encode(job[2], job[3]), jobs)
    else:
        encoded = parallel(lambda job: blockfmt.encode_buffer(job[2], job[3], alloc), jobs)
    for (was_held, (key, start, end), _, _), data in zip(jobs, encoded, strict=True):
        if was_held:
            out.held.append(data)
        else:
            out.new.append((key, start, end, data))
    return out


def store_blocks(
    kv: StageKV,
    exported: Sequence[KV],
    first: int,
    store: KVStore,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
) -> list[BlockRef]:
    """Put blocks first, first+1, ... (as `encode_blocks` encodes them) in one request to
    Kubo; parts already held are not put again. Returns the manifest entries of every
    block, in order."""
    encoded = encode_blocks(kv, exported, first, store, token_ids, keys)
    return encoded.refs(store.put_many(encoded.new) if encoded.new else [])


def encode_session(
    session: StageCache,
    store: KVStore,
    model_cid: str,
    block_size: int,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    alloc: Alloc = bytearray,
) -> Encoded:
    """Encode every full block of a prefilled session, those the store holds too, each
    into memory of its own from `alloc`."""
    kv = StageKV.of(session.kv_layout, model_cid, block_size)
    last = min(len(keys), session.position // block_size)
    exported = session.export_kv(0, last * block_size) if last > 0 else []
    return encode_blocks(kv, exported, 0, store, token_ids, keys, encode_held=True, alloc=alloc)


def store_session(
    session: StageCache,
    store: KVStore,
    model_cid: str,
    block_size: int,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    first: int = 0,
) -> list[BlockRef]:
    """Store every full block of a prefilled session from block `first` on."""
    kv = StageKV.of(session.kv_layout, model_cid, block_size)
    last = min(len(keys), session.position // block_size)
    if last <= first:
        return []
    exported = session.export_kv(first * block_size, last * block_size)
    return store_blocks(kv, exported, first, store, token_ids, keys)


# -- fetch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One part to fetch for one block of one stage."""

    key: bytes
    part: PartRef
    local: bool


def _cover(kv: StageKV, candidates: list[Source]) -> list[Source] | None:
    """Parts whose layer ranges together cover the stage's layers (fewest, local first)."""
    chosen, at = [], kv.layer_start
    while at < kv.layer_end:
        fits = [c for c in candidates if c.part.layer_start <= at < c.part.layer_end]
        if not fits:
            return None
        best = max(fits, key=lambda c: (c.part.layer_end, c.local))
        chosen.append(best)
        at = best.part.layer_end
    return chosen


def plan_blocks(
    kv: StageKV,
    store: KVStore,
    manifest: KVManifest | None,
    keys: Sequence[bytes],
    limit: int,
) -> list[list[Source]]:
    """For the leading blocks (at most `limit`) that held or manifest parts cover: the
    parts to fetch for each."""
    plans = []
    for key in keys[:limit]:
        candidates = [Source(key, p, True) for p in store.parts(key)]
        if manifest is not None:
            candidates += [Source(key, p, False) for p in manifest.parts(key)]
        cover = _cover(kv, candidates)
        if cover is None:
            break
        plans.append(cover)
    return plans


@dataclass
class Fetched:
    """Verified blocks of one stage: per block, its parts' tensors (covering the stage's
    layers, maybe more)."""

    blocks: list[list[BlockTensors]] = field(default_factory=list)
    # Parts fetched from other peers, with their sizes, to pin and index afterwards.
    remote: list[tuple[Source, int]] = field(default_factory=list)
    # Parts another peer handed over directly, with their bytes (not in this peer's Kubo).
    direct: list[tuple[Source, Bytes]] = field(default_factory=list)
    local: list[Source] = field(default_factory=list)


def _direct_or_store(
    store: KVStore, direct: Mapping[str, Callable[[], Bytes]]
) -> Callable[[str], Bytes]:
    """A part's bytes: from `direct` (a peer's handoff: a getter per CID, which raises a
    KVError when the bytes cannot be had), checked against the CID as store.fetch checks
    Kubo's, when it names the part; else from the store."""

    def fetch(cid: str) -> Bytes:
        getter = direct.get(cid)
        if getter is None:
            return store.fetch(cid)
        data = getter()
        if raw_cid(data) != cid:
            raise BlockRefused(f"the bytes handed over for {cid} do not match that CID")
        return data

    return fetch


def fetch_blocks(
    kv: StageKV,
    store: KVStore,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    plans: Sequence[Sequence[Source]],
    pool: Executor,
    direct: Mapping[str, Callable[[], Bytes]] | None = None,
) -> Fetched:
    """Fetch every planned part concurrently (from `direct`, a peer's handoff: a getter of
    the bytes per CID, where it names the part); verify block by block as they arrive,
    stopping (with a warning) at the first block with a part that is missing or refused.
    (Copying each block into the cache as it arrives, too, measured 70 ms slower for 98
    blocks on two cores than one import afterwards: it competes with the fetch threads.)"""
    direct = direct or {}
    fetch = _direct_or_store(store, direct)
    futures: list[list[Future]] = [[pool.submit(fetch, s.part.cid) for s in plan] for plan in plans]
    out = Fetched()
    try:
        for index, (plan, pending) in enumerate(zip(plans, futures, strict=True)):
            parts = _verified_block(kv, store, token_ids, keys, index, plan, pending)
            if parts is None:
                break
            out.blocks.append(parts)
            for source, future in zip(plan, pending, strict=True):
                if source.local:
                    out.local.append(source)
                elif source.part.cid in direct:
                    out.direct.append((source, future.result()))
                else:
                    out.remote.append((source, len(future.result())))
    finally:
        for pending in futures:
            for future in pending:
                future.cancel()
    return out


def _verified_block(
    kv: StageKV,
    store: KVStore,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    index: int,
    plan: Sequence[Source],
    pending: Sequence[Future],
) -> list[BlockTensors] | None:
    parts: list[BlockTensors] = []
    position = index * kv.block_size
    for source, future in zip(plan, pending, strict=True):
        part = source.part
        where = (
            f"kv block {index} (position {position}) layers [{part.layer_start}, "
            f"{part.layer_end}) {part.cid} from {'this peer' if source.local else 'the manifest'}"
        )
        try:
            data = future.result()
            expected = kv.meta(keys, index, token_ids, part.layer_start, part.layer_end)
            parts.append(
                blockfmt.decode_tensors(data, expected, kv.kv_heads, kv.head_dim, kv.dtype)
            )
        except KVError as exc:  # Kubo's, or a direct handoff's getter's, or the checks'
            what = "refused" if isinstance(exc, BlockRefused) else "not fetched"
            log.warning("%s %s: %s; computing from position %d", where, what, exc, position)
            if source.local:
                store.forget(source.key, part.layer_start, part.layer_end)
            return None
    return parts


def import_blocks(session: StageCache, blocks: Sequence[Sequence[BlockTensors]]) -> int:
    """Copy verified blocks straight into a session's cache buffer (one copy per part)
    and advance it; returns tokens."""
    if not blocks:
        return 0
    kv = StageKV.of(session.kv_layout, "", blocks[0][0].rows.shape[2])
    rows = session.reserve_kv(len(blocks) * kv.block_size)
    for index, parts in enumerate(blocks):
        _copy_block(parts, rows, index, kv)
    session.commit_kv(len(blocks) * kv.block_size)
    return len(blocks) * kv.block_size


def _copy_block(parts: Sequence[BlockTensors], rows: torch.Tensor, index: int, kv: StageKV):
    """Copy block `index`'s parts into `rows`, a stage's reserved K/V rows."""
    size = kv.block_size
    dest = rows[:, :, index * size : (index + 1) * size]
    with torch.inference_mode():
        for part in parts:
            _copy_part(part, dest, kv.layer_start, kv.layer_end)


def _copy_part(part: BlockTensors, dest: torch.Tensor, start: int, end: int) -> None:
    """Copy a part's layers that fall in the stage's [start, end) into `dest`, the
    stage's K/V rows (2 per layer) of one block's positions."""
    if (part.layer_start, part.layer_end) == (start, end):
        dest.index_copy_(0, part.slots, part.rows)
        return
    # Rows of the part's layer order, shifted to the stage's; keep those inside it.
    shift = 2 * (part.layer_start - start)
    stage_rows = part.slots + shift
    keep = (stage_rows >= 0) & (stage_rows < 2 * (end - start))
    dest.index_copy_(0, stage_rows[keep], part.rows[keep])


def adopt(
    store: KVStore,
    remote: Sequence[tuple[Source, int]],
    direct: Sequence[tuple[Source, Bytes]] = (),
) -> None:
    """Keep parts taken from other peers, once verified, so this peer serves them too:
    pin and index those fetched through IPFS, put those handed over directly (one request);
    parts held already are skipped."""
    for source, size in remote:
        part = source.part
        if not store.has(source.key, part.layer_start, part.layer_end):
            store.adopt(source.key, part, size)
    new = [
        (source.key, source.part.layer_start, source.part.layer_end, bytes(data))
        for source, data in direct
        if not store.has(source.key, source.part.layer_start, source.part.layer_end)
    ]
    if new:
        store.put_many(new)


def fetch_into(
    session: StageCache,
    store: KVStore,
    manifest: KVManifest | None,
    model_cid: str,
    block_size: int,
    token_ids: Sequence[int],
    keys: Sequence[bytes],
    limit: int,
    pool: Executor,
    direct: Mapping[str, Callable[[], Bytes]] | None = None,
) -> Fetched:
    """Plan, fetch (from `direct` where it names a part), verify and import the longest
    usable prefix into a fresh session."""
    kv = StageKV.of(session.kv_layout, model_cid, block_size)
    plans = plan_blocks(kv, store, manifest, keys, limit)
    fetched = fetch_blocks(kv, store, token_ids, keys, plans, pool, direct)
    import_blocks(session, fetched.blocks)
    return fetched
