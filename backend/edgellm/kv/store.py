"""The blocks this peer holds: pinned in its Kubo, listed in an index with a byte cap.

The index maps (block key, layer_start, layer_end) to the part's CID, size and last use;
it is persisted as `<kv dir>/index.json` (edgellm.atomicfile: a fresh temporary file,
fsynced, renamed, the directory fsynced, so a crash never leaves half an index); at
start-up `reconcile` makes it agree with Kubo's pins. When the pinned bytes exceed
`max_bytes`, the least recently used parts are unpinned and forgotten (Kubo's garbage
collector reclaims the space; `collect_garbage` runs it now). Thread-safe.

Decision: one directory per model is this peer's store, shared by every process of the
peer that computes blocks: the backend's engine (whole-model runs, `infer --local`) and
the stage actors its Ray node runs for a swarm's clusters (a split's layer range, a P/D
prefill or decode). So everything a worker computes is indexed, evicted under one cap and
announced (the backend's HeldKeys reads the same index). Processes take an exclusive
`flock` on `<dir>/index.lock` around each change (re-reading the index first if another
process rewrote it), and a reader re-reads it when its modification stamp changed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from edgellm import atomicfile
from edgellm.errors import BlockRefused, KuboError, KVError
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.manifest import PartRef
from edgellm.models.cid import raw_cid

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
LOCK_NAME = "index.lock"
INDEX_FORMAT = "edgellm-kv-index/1"

_Slot = tuple[bytes, int, int]  # (key, layer_start, layer_end)
# Bytes of blocks put in one request to Kubo, at most (and one block more).
PUT_BATCH_BYTES = 64 << 20


@dataclass(frozen=True)
class StoredPart:
    key: str  # hex
    layer_start: int
    layer_end: int
    cid: str
    size: int
    last_used: float  # time.time()

    @property
    def slot(self) -> _Slot:
        return (bytes.fromhex(self.key), self.layer_start, self.layer_end)

    def ref(self) -> PartRef:
        return PartRef(self.layer_start, self.layer_end, self.cid, self.size)


def _part(doc) -> StoredPart:
    """One index entry, checked field by field (the index is read back from disk)."""
    part = StoredPart(**doc)
    bytes.fromhex(part.key)
    ints = (part.layer_start, part.layer_end, part.size)
    if not all(type(n) is int and n >= 0 for n in ints) or not isinstance(part.cid, str):
        raise ValueError(f"bad index entry {doc!r:.200}")
    if not isinstance(part.last_used, int | float) or isinstance(part.last_used, bool):
        raise ValueError(f"bad index entry {doc!r:.200}")
    return part


class KVStore:
    def __init__(
        self, client: KuboClient, directory: Path, max_bytes: int, fetch_timeout_s: float = 5.0
    ) -> None:
        self.client = client
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fetch_timeout_s = fetch_timeout_s
        self._lock = threading.Lock()
        self._parts: dict[_Slot, StoredPart] = {}
        # (mtime_ns, size, inode) of the index as last read or written here.
        self._stamp: tuple[int, int, int] | None = None
        with self._lock:
            self._refresh()

    # -- index -------------------------------------------------------------------------

    def _index_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = (self.directory / INDEX_NAME).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        """Re-read the index if another process rewrote it; the caller holds the lock."""
        stamp = self._index_stamp()
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        path = self.directory / INDEX_NAME
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
                raise ValueError("not an edgellm KV index")
            parts = [_part(p) for p in doc["parts"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("kv: ignoring unreadable index %s: %s", path, exc)
            return
        self._parts = {p.slot: p for p in parts}

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the thread lock and the directory's file lock, with the index fresh; the
        body changes `_parts`, which is written back afterwards."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / LOCK_NAME, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    self._refresh()
                    yield
                    self._save()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _save(self) -> None:
        """Write the index (atomically, fsynced); the caller holds the lock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"format": INDEX_FORMAT, "parts": [asdict(p) for p in self._parts.values()]}
        try:
            atomicfile.write(
                self.directory / INDEX_NAME, json.dumps(doc, separators=(",", ":")).encode()
            )
            self._stamp = self._index_stamp()
        except OSError as exc:
            log.warning("kv: cannot write index: %s", exc)

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            self._refresh()
            return sum(p.size for p in self._parts.values())

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._parts)

    def keys(self) -> list[bytes]:
        """The distinct block keys held, in the order they were first indexed."""
        with self._lock:
            self._refresh()
            return list(dict.fromkeys(slot[0] for slot in self._parts))

    def entries(self) -> list[StoredPart]:
        """Every indexed part, least recently used first."""
        with self._lock:
            self._refresh()
            return sorted(self._parts.values(), key=lambda p: p.last_used)

    def parts(self, key: bytes) -> list[PartRef]:
        """Parts of block `key` held here (any layer ranges)."""
        with self._lock:
            self._refresh()
            return [p.ref() for s, p in self._parts.items() if s[0] == key]

    def has(self, key: bytes, layer_start: int, layer_end: int) -> bool:
        with self._lock:
            self._refresh()
            return (key, layer_start, layer_end) in self._parts

    def touch(self, slots: Iterable[_Slot]) -> None:
        """Mark parts as just used (LRU)."""
        now = time.time()
        with self._changing():
            for slot in slots:
                part = self._parts.get(slot)
                if part is not None:
                    self._parts[slot] = StoredPart(**{**asdict(part), "last_used": now})

    def forget(self, key: bytes, layer_start: int, layer_end: int) -> None:
        """Drop a part that turned out unusable (unpinned, best effort)."""
        with self._changing():
            part = self._parts.pop((key, layer_start, layer_end), None)
        if part is not None:
            self._unpin([part])

    # -- content -----------------------------------------------------------------------

    def put(self, key: bytes, layer_start: int, layer_end: int, data: bytes) -> PartRef:
        """Pin `data` in Kubo and index it; evicts least recently used parts over the cap."""
        return self.put_many([(key, layer_start, layer_end, data)])[0]

    def put_many(self, parts: Sequence[tuple[bytes, int, int, bytes]]) -> list[PartRef]:
        """`put` for many (key, layer_start, layer_end, data) parts: one request to Kubo
        per PUT_BATCH_BYTES (a long prompt's KV is not one huge body), one index write."""
        cids: list[str] = []
        for batch in _batches([data for *_, data in parts], PUT_BATCH_BYTES):
            cids += self.client.block_put_many(batch, pin=True)
        now = time.time()
        added = [
            StoredPart(key.hex(), start, end, cid, len(data), now)
            for (key, start, end, data), cid in zip(parts, cids, strict=True)
        ]
        with self._changing():
            for part in added:
                self._parts[part.slot] = part
            evicted = self._evict()
        if evicted:
            log.info("kv: evicted %d block parts (cap %d bytes)", len(evicted), self.max_bytes)
        self._unpin(evicted)
        return [part.ref() for part in added]

    def adopt(self, key: bytes, part: PartRef, size: int) -> None:
        """Pin and index a part fetched from another peer, so this peer serves it too."""
        self.client.pin_add(part.cid)
        self._add(key, part.layer_start, part.layer_end, part.cid, size)

    def fetch(self, cid: str) -> bytes:
        """The block's bytes, checked against the sha2-256 its CID names: whatever answers
        on Kubo's port (another local user's process, a forged gateway) cannot hand over
        other bytes. Only raw-codec sha2-256 CIDv1s, as block_put makes them, are fetched.
        (Hashing runs in the fetch threads, ~0.5 ms per 742 KB block.)"""
        data = self.client.block_get(cid, self.fetch_timeout_s)
        if raw_cid(data) != cid:
            raise BlockRefused(f"the bytes Kubo returned for {cid} do not match that CID")
        return data

    def _add(self, key: bytes, start: int, end: int, cid: str, size: int) -> PartRef:
        part = StoredPart(key.hex(), start, end, cid, size, time.time())
        with self._changing():
            self._parts[part.slot] = part
            evicted = self._evict()
        if evicted:
            log.info("kv: evicted %d block parts (cap %d bytes)", len(evicted), self.max_bytes)
        self._unpin(evicted)
        return part.ref()

    def _evict(self) -> list[StoredPart]:
        """Drop least recently used parts until under the cap; the caller holds the lock."""
        total = sum(p.size for p in self._parts.values())
        evicted: list[StoredPart] = []
        if total <= self.max_bytes:
            return evicted
        for part in sorted(self._parts.values(), key=lambda p: p.last_used):
            if total <= self.max_bytes:
                break
            del self._parts[part.slot]
            total -= part.size
            evicted.append(part)
        return evicted

    def _unpin(self, parts: list[StoredPart]) -> None:
        with self._lock:
            self._refresh()
            live = {p.cid for p in self._parts.values()}
        for part in parts:
            if part.cid in live:  # identical bytes still indexed under another slot
                continue
            try:
                self.client.pin_rm(part.cid)
            except KuboError as exc:
                log.debug("kv: unpin %s: %s", part.cid, exc)

    def reconcile(self, model_cid: str) -> tuple[int, int]:
        """Make the index agree with Kubo's pins, at start-up: forget parts whose CID is no
        longer pinned, and index this model's pinned blocks the index lacks (read back from
        Kubo: a block's metadata names its key and layers), so an index lost or rolled
        back by a crash does not orphan every pinned block forever. Returns (forgotten,
        recovered); KuboError when Kubo cannot list its pins."""
        pinned = self.client.pins()
        with self._changing():
            gone = [slot for slot, p in self._parts.items() if p.cid not in pinned]
            for slot in gone:
                del self._parts[slot]
            known = {p.cid for p in self._parts.values()}
        recovered = [
            part for cid in sorted(pinned - known) if (part := self._recover(cid, model_cid))
        ]
        with self._changing():
            for part in recovered:
                self._parts.setdefault(part.slot, part)
        return len(gone), len(recovered)

    def _recover(self, cid: str, model_cid: str) -> StoredPart | None:
        """The index entry of pinned block `cid` if it is a KV block of this model."""
        # kv.block imports torch; the backend's services import this module before torch
        # (edgellm.warm), and only a reindex after a lost index reads blocks here.
        from edgellm.kv.block import read_meta

        try:
            data = self.fetch(cid)
            meta, _ = read_meta(data)
        except KVError:
            return None  # not a KV block (or not readable now): not ours to index
        if meta.model_cid != model_cid:
            return None
        return StoredPart(meta.key.hex(), meta.layer_start, meta.layer_end, cid, len(data), 0.0)

    def collect_garbage(self) -> None:
        self.client.repo_gc()


def _batches(blocks: list[bytes], limit: int) -> list[list[bytes]]:
    """Consecutive runs of blocks, each ending at the first block that takes it to `limit`
    bytes or more."""
    out: list[list[bytes]] = [[]]
    size = 0
    for data in blocks:
        if size >= limit:
            out.append([])
            size = 0
        out[-1].append(data)
        size += len(data)
    return out if out[0] else []
