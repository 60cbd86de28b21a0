"""The blocks this peer holds: pinned in its Kubo, listed in an index with a byte cap.

The index maps (block key, layer_start, layer_end) to the part's CID, size and last use;
it is persisted as `<kv dir>/index.json` (written to a temporary file and renamed, so a
crash never leaves half an index). When the pinned bytes exceed `max_bytes`, the least
recently used parts are unpinned and forgotten (Kubo's garbage collector reclaims the
space; `collect_garbage` runs it now). Thread-safe.

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
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from edgellm.errors import KuboError
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.manifest import PartRef

log = logging.getLogger(__name__)

INDEX_NAME = "index.json"
LOCK_NAME = "index.lock"
INDEX_FORMAT = "edgellm-kv-index/1"

_Slot = tuple[bytes, int, int]  # (key, layer_start, layer_end)


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
            if doc.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            parts = [StoredPart(**p) for p in doc["parts"]]
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
        """Write the index; the caller holds the lock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"format": INDEX_FORMAT, "parts": [asdict(p) for p in self._parts.values()]}
        fd, tmp = tempfile.mkstemp(prefix=".index-", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out, separators=(",", ":"))
            os.replace(tmp, self.directory / INDEX_NAME)
            self._stamp = self._index_stamp()
        except OSError as exc:
            log.warning("kv: cannot write index: %s", exc)
            Path(tmp).unlink(missing_ok=True)

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
        cid = self.client.block_put(data, pin=True)
        return self._add(key, layer_start, layer_end, cid, len(data))

    def adopt(self, key: bytes, part: PartRef, size: int) -> None:
        """Pin and index a part fetched from another peer, so this peer serves it too."""
        self.client.pin_add(part.cid)
        self._add(key, part.layer_start, part.layer_end, part.cid, size)

    def fetch(self, cid: str) -> bytes:
        return self.client.block_get(cid, self.fetch_timeout_s)

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

    def collect_garbage(self) -> None:
        self.client.repo_gc()
