"""The model memory budget: which loaded models stay when another one needs room.

Pure bookkeeping (no engine, no lock of its own: ModelManager holds its lock around
every call), so the rules are tested without loading a model.

Decisions:
- A model's cost is its weights' bytes (the manifest's `weights_bytes`: the engines hold
  the stored dtype in memory). The KV slot pool (`kv_budget_mb`) and activations come on
  top and are not counted: they depend on the requests, the weights do not.
- Room is made by unloading the least recently used models that run nothing (no request,
  no cluster session holds them); a model in use is never unloaded. When the idle ones
  cannot make room the load is refused (Unavailable: try later), and a model larger than
  the whole budget is refused for good (ModelTooLarge).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edgellm.errors import ModelTooLarge, Unavailable

MIB = 1 << 20


@dataclass
class _Entry:
    size: int
    uses: int = 0


class MemoryBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self.unloads = 0  # models unloaded to make room, ever

    def used(self) -> int:
        return sum(e.size for e in self._entries.values())

    def victims(self, model_id: str, size: int) -> list[str]:
        """The idle models to unload, least recently used first, so that `size` more bytes
        fit; raises when they cannot."""
        if size > self.limit:
            raise ModelTooLarge(
                f"model {model_id!r} needs {_mib(size)} MiB, more than the backend's "
                f"model memory budget of {_mib(self.limit)} MiB (backend.model_memory_mb)"
            )
        free = self.limit - self.used()
        out: list[str] = []
        for other, entry in self._entries.items():
            if free >= size:
                break
            if entry.uses == 0:
                out.append(other)
                free += entry.size
        if free < size:
            busy = sorted(i for i, e in self._entries.items() if e.uses > 0)
            raise Unavailable(
                f"no room to load {model_id!r} ({_mib(size)} MiB): the models in use "
                f"({', '.join(busy)}) fill the budget of {_mib(self.limit)} MiB; try again later"
            )
        return out

    def add(self, model_id: str, size: int) -> None:
        self._entries[model_id] = _Entry(size)

    def remove(self, model_id: str, *, evicted: bool = False) -> None:
        if self._entries.pop(model_id, None) is not None and evicted:
            self.unloads += 1

    def acquire(self, model_id: str) -> None:
        self._entries[model_id].uses += 1
        self._entries.move_to_end(model_id)

    def release(self, model_id: str) -> None:
        entry = self._entries.get(model_id)
        if entry is not None:
            entry.uses = max(0, entry.uses - 1)
            self._entries.move_to_end(model_id)

    def touch(self, model_id: str) -> None:
        if model_id in self._entries:
            self._entries.move_to_end(model_id)


def model_memory_budget(model_memory_mb: int, device: str) -> int:
    """The budget in bytes: `backend.model_memory_mb`, or half of this machine's memory
    (the GPU's on CUDA) when it is 0."""
    if model_memory_mb > 0:
        return model_memory_mb * MIB
    from edgellm.server.status import memory

    total, _ = memory(device)
    return total // 2


def _mib(n: int) -> int:
    return -(-n // MIB)
