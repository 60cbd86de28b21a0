"""Buffers for encoded blocks, kept for reuse with their pages in memory.

A prefill peer encodes a prompt's blocks into new memory on the way to the decode peer:
72.7 MB for 1,568 tokens of the embedded model. Fresh memory is page faults, and on a
virtual machine whose host takes freed pages back, costly ones: in a new stage process,
encoding the 98 blocks took 76-81 ms, against 28-55 ms into memory already touched (two
cores; P/D bench runs, instrumented). The stage process is new for a cold P/D request, so
the prefill peer fills a pool at load (`BufferPool.fill`), off any request's path, and
takes its encode buffers from it; a buffer comes back once its block is in Kubo. A pool
costs its bytes of resident memory for the stage's life, hence a bound (the prefill
peer's: disaggregated.worker.DIRECT_MAX_BYTES, the largest handoff sent directly).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

# What a block's header may take beyond its tensors: its metadata and tensor table (about
# 4.7 KB for a block of the embedded model's 30 layers and 16 tokens) with room to spare.
HEADER_ROOM = 16 * 1024


class BufferPool:
    """Buffers of `capacity` bytes each; `take(n)` hands out a view of n bytes of a free
    one (a new bytearray when n is over the capacity or none is free), `give` takes views
    back. Thread-safe (the encoding threads take at once)."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._free: dict[int, bytearray] = {}  # by id
        # Every buffer of the pool by id, held so that no other object takes its id.
        self._owned: dict[int, bytearray] = {}
        # Takes served from the pool and from new memory (observed by tests and logs).
        self.reused = 0
        self.fresh = 0

    @classmethod
    def for_blocks(cls, tensor_bytes: int) -> BufferPool:
        """A pool whose buffers hold a block of `tensor_bytes` with its header."""
        return cls(tensor_bytes + HEADER_ROOM)

    def fill(self, total_bytes: int) -> int:
        """Add buffers up to `total_bytes` in all, their pages in memory before any block
        is encoded (a new bytearray is written with zeros); returns the buffer count."""
        with self._lock:
            want = total_bytes // self.capacity - len(self._owned)
        added = [bytearray(self.capacity) for _ in range(max(0, want))]
        with self._lock:
            self._free.update((id(b), b) for b in added)
            self._owned.update(self._free)
            return len(self._owned)

    def take(self, size: int) -> bytearray | memoryview:
        """Writable memory of exactly `size` bytes, not zeroed when it comes from the pool
        (an encoder writes every byte)."""
        with self._lock:
            if size <= self.capacity and self._free:
                self.reused += 1
                return memoryview(self._free.popitem()[1])[:size]
            self.fresh += 1
        return bytearray(size)

    def give(self, parts: Iterable[object]) -> None:
        """Take back the pool's buffers among `parts` (what `take` handed out, once
        nothing reads them any more); anything else is left to the garbage collector."""
        with self._lock:
            for part in parts:
                buffer = part.obj if isinstance(part, memoryview) else part
                if self._owned.get(id(buffer)) is buffer:
                    self._free[id(buffer)] = buffer

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)
