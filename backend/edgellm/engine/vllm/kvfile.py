"""How K/V travels between the backend and vLLM's processes: one raw tensor in a file.

The backend (prefix cache, IPFS, checks) and vLLM's worker (the paged KV cache) are
separate processes, and vLLM's request parameters are small messages; so a request's
fetched prefix, and the K/V of its prompt after the prefill, go through a file in a
directory the backend owns (in /dev/shm where there is one), named in the request's
`kv_transfer_params`. A file holds one contiguous float tensor shaped
[2 * layers, kv_heads, tokens, head_dim]: row 2i is layer i's K, 2i + 1 its V, the
layout `StageCache.reserve_kv` uses. Its shape travels beside it, in the parameters.

Imported by the connector inside vLLM's processes: torch and the standard library only.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from edgellm.engine.vllm.scratch import private_dir

# The request parameter (inside vLLM's kv_transfer_params) the connector reads.
PARAM = "edgellm"


@dataclass(frozen=True)
class Shape:
    """The K/V a file holds, besides its token count."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    def of(self, tokens: int) -> tuple[int, int, int, int]:
        return (2 * self.layers, self.kv_heads, tokens, self.head_dim)


def write(path: Path, kv: torch.Tensor) -> None:
    """Write `kv` whole, atomically: a reader sees the complete file or none."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        kv.contiguous().numpy().tofile(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full /dev/shm must not keep half a file
        raise


def read(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The tensor a file holds; ValueError when its size is not `shape`'s."""
    data = torch.from_file(str(path), shared=False, size=_numel(path, dtype), dtype=dtype)
    expected = 1
    for dim in shape:
        expected *= dim
    if data.numel() != expected:
        raise ValueError(f"{path.name} holds {data.numel()} values, expected {expected}")
    return data.view(shape)


def _numel(path: Path, dtype: torch.dtype) -> int:
    size = path.stat().st_size
    itemsize = torch.empty((), dtype=dtype).element_size()
    if size % itemsize:
        raise ValueError(f"{path.name} is {size} bytes, not whole {dtype} values")
    return size // itemsize


SCRATCH_PREFIX = "edgellm-vllm-kv-"


def scratch_dir(base: Path | None = None) -> Path:
    """A fresh private directory for this backend's K/V files (scratch.private_dir)."""
    return private_dir(SCRATCH_PREFIX, base)
