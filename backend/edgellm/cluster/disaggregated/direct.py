"""The bytes of a P/D handoff, straight from the prefill peer to the decode peer.

On P (a Ray actor), `put_chunks` puts the blocks' bytes into its node's object store in
chunks of about CHUNK_BYTES, in block order, and the Handoff carries each chunk's CIDs
with a reference to it. On D, `getters` gives a getter per CID: the first getter of a
chunk takes it from P's node (Ray moves it node to node; every chunk's pull starts at
once), within one deadline for the whole handoff. A chunk that does not arrive in time
(a slow link), or whose owner is gone (P lost), makes its blocks' getters raise a KVError,
so D keeps the leading blocks that came, as a fetch from Kubo would, and computes the
rest. What the bytes are is checked by CID where they are used (kv.handoff.fetch_blocks).

Chunks, not one object, so that a slow link still yields its first blocks, and not one
object per block, so that a handoff is a few Ray objects rather than a hundred.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError

from edgellm.errors import KVError
from edgellm.kv.handoff import Bytes

# Bytes per object-store chunk: 11 blocks of the embedded model's 742 KB.
CHUNK_BYTES = 8 * 1024 * 1024

# A block's bytes: in-process, as encoded; over Ray, a view of them in the object store.
Getter = Callable[[], Bytes]


def put_chunks(
    blocks: Mapping[str, bytes | bytearray],
) -> tuple[tuple[tuple[str, ...], tuple[int, ...], Any], ...]:
    """In a Ray worker: `blocks` (bytes by CID, in block order) into this node's object
    store, in chunks; per chunk, its CIDs, their sizes and the reference. A chunk is a
    list of numpy byte arrays over the blocks' own buffers, which Ray stores out of band:
    each block is copied once, into the object store, and the decode peer reads it where
    it lies in its own (no copy into either heap, whose fresh pages cost more than the
    copy on a virtual machine)."""
    chunks: list[tuple[tuple[str, ...], tuple[int, ...], Any]] = []
    cids: list[str] = []
    parts: list[np.ndarray] = []
    size = 0
    for cid, data in blocks.items():
        cids.append(cid)
        parts.append(np.frombuffer(data, dtype=np.uint8))
        size += len(data)
        if size >= CHUNK_BYTES:
            chunks.append((tuple(cids), tuple(len(p) for p in parts), ray.put(parts)))
            cids, parts, size = [], [], 0
    if parts:
        chunks.append((tuple(cids), tuple(len(p) for p in parts), ray.put(parts)))
    return tuple(chunks)


def getters(blocks: object, timeout_s: float) -> dict[str, Getter]:
    """A getter per CID of a handoff's bytes: `blocks` as an in-process actor handed them
    (bytes by CID), or as put_chunks did; {} for None. Anything else is refused."""
    if blocks is None:
        return {}
    if isinstance(blocks, dict):
        if not all(
            isinstance(k, str) and isinstance(v, (bytes, bytearray)) for k, v in blocks.items()
        ):
            raise KVError("the prefill peer handed over something other than bytes by CID")
        return {cid: (lambda data=data: data) for cid, data in blocks.items()}
    chunks = _checked_chunks(blocks)
    if not chunks:
        return {}
    deadline = time.monotonic() + timeout_s
    refs = [ref for *_, ref in chunks]
    ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)  # start every pull
    out: dict[str, Getter] = {}
    for cids, sizes, ref in chunks:
        chunk = _Chunk(ref, cids, sizes, deadline)
        for cid in cids:
            out[cid] = lambda chunk=chunk, cid=cid: chunk.part(cid)
    return out


def _checked_chunks(blocks: object) -> list[tuple[tuple[str, ...], tuple[int, ...], Any]]:
    ok = isinstance(blocks, tuple) and all(
        isinstance(c, tuple)
        and len(c) == 3
        and isinstance(c[0], tuple)
        and isinstance(c[1], tuple)
        and len(c[0]) == len(c[1])
        and all(isinstance(cid, str) for cid in c[0])
        and all(type(n) is int and n >= 0 for n in c[1])
        and isinstance(c[2], ray.ObjectRef)
        for c in blocks
    )
    if not ok:
        raise KVError("the prefill peer handed over something other than chunks of blocks")
    return list(blocks)  # type: ignore[arg-type]


class _Chunk:
    """One chunk, taken from the object store once (by whichever getter asks first): its
    blocks are read-only views of it there."""

    def __init__(
        self, ref: Any, cids: tuple[str, ...], sizes: tuple[int, ...], deadline: float
    ) -> None:
        self.ref, self.cids, self.sizes = ref, cids, sizes
        self.deadline = deadline
        self._lock = threading.Lock()
        self._parts: dict[str, memoryview] | None = None
        self._error: KVError | None = None

    def part(self, cid: str) -> memoryview:
        with self._lock:
            if self._parts is None and self._error is None:
                self._take()
        if self._error is not None:
            raise self._error
        assert self._parts is not None
        return self._parts[cid]

    def _take(self) -> None:
        left = max(0.0, self.deadline - time.monotonic())
        try:
            data = ray.get(self.ref, timeout=left)
        except (RayError, TimeoutError) as exc:
            self._error = KVError(f"the handed-over blocks did not arrive ({type(exc).__name__})")
            return
        ok = isinstance(data, list) and len(data) == len(self.sizes)
        ok = ok and all(
            isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (n,)
            for a, n in zip(data, self.sizes, strict=True)
        )
        if not ok:
            self._error = KVError("the prefill peer's chunk is not the blocks it named")
            return
        self._parts = {cid: memoryview(a) for cid, a in zip(self.cids, data, strict=True)}


def map_object_store(nbytes: int) -> None:
    """In a Ray worker: map `nbytes` of this node's object store into this process, by
    putting that much (zeros) and dropping it. The store's memory is
    faulted in when its raylet starts (cluster/node.py), but each process maps it anew,
    page by page, on first touch: a new prefill stage's `put_chunks` of 72.7 MB took
    37-49 ms against 12-27 ms once the process had mapped the store (four Ray nodes on the
    2-core machine, medians of 3). The store reuses the freed space for the next puts."""
    if nbytes <= 0:
        return
    ref = ray.put(np.zeros(nbytes, dtype=np.uint8))  # written here: every page mapped
    del ref
