"""Tensors between the driver and the stage actors, as numpy arrays.

Ray pickles a torch tensor through torch's own reduction (its storage saved in torch's
format on one side, loaded on the other), and a numpy array with pickle 5, its buffer out of
band. On the 2-core machine, between a driver and actors on two other Ray nodes of the same
host (medians of 200 calls): a call carrying a [1, 1, 576] float32 activation took 1.96 ms
there and back as a tensor, 1.40 ms as an array; a chain of two such calls whose last one
returns a step's [1, 49152] float32 logits took 4.91 ms with tensors and 2.71 ms with
arrays. A split's decode step is that chain, so every tensor of a stage call travels as a
`WireTensor`: the driver packs what it sends and unpacks what it gets (RayCalls,
RayPipeline), a stage actor unpacks its arguments and, as a Ray actor, packs its result
(`on_the_wire`). In-process actors (the tests' LocalCalls) pass tensors as they are.

numpy has no bfloat16 (nor float8), so the elements travel as integers of the same width
and the dtype by name; only the dtypes in DTYPES are taken back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from edgellm.errors import ClusterError

# The dtypes a stage's tensors have (token ids, activations, logits, spot-check rows).
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}
# Integers of each element width, on both sides.
_TORCH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NUMPY_INT = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


@dataclass(frozen=True)
class WireTensor:
    """A CPU tensor's elements as an array of integers of their width, and its dtype."""

    data: np.ndarray
    dtype: str

    @classmethod
    def of(cls, tensor: torch.Tensor) -> WireTensor:
        t = tensor.detach().to("cpu").contiguous()
        name = str(t.dtype).removeprefix("torch.")
        return cls(t.view(_TORCH_INT[t.element_size()]).numpy(), name)

    def tensor(self) -> torch.Tensor:
        """The tensor again; a ClusterError if this is not one that `of` made."""
        dtype = DTYPES.get(self.dtype) if isinstance(self.dtype, str) else None
        data = self.data
        if dtype is None:
            raise ClusterError(f"a stage sent a tensor of unknown dtype {self.dtype!r}")
        if not isinstance(data, np.ndarray):
            raise ClusterError(f"a stage sent {type(data).__name__} as a tensor's elements")
        width = torch.empty((), dtype=dtype).element_size()
        if data.dtype != _NUMPY_INT[width]:
            raise ClusterError(f"a stage sent {data.dtype} elements for a {self.dtype} tensor")
        if not data.flags.writeable:  # Ray's buffers are read-only; a stage may write
            data = data.copy()
        return torch.from_numpy(data).view(dtype)


def pack(value: Any) -> Any:
    """`value` with its tensors (also inside tuples) as WireTensors. Lists are not walked:
    a call's lists are prompts and ids (a prompt's 1,500 ints each call), never tensors."""
    if isinstance(value, torch.Tensor):
        return WireTensor.of(value)
    if type(value) is tuple:
        return tuple(pack(v) for v in value)
    return value


def unpack(value: Any) -> Any:
    """`value` with its WireTensors (also inside tuples) as tensors."""
    if isinstance(value, WireTensor):
        return value.tensor()
    if type(value) is tuple:
        return tuple(unpack(v) for v in value)
    return value


Method = TypeVar("Method", bound=Callable[..., Any])


def on_the_wire(method: Method) -> Method:
    """For a stage actor's method: its arguments' WireTensors are unpacked, and its result
    is packed when the actor runs in Ray (its `on_ray`)."""

    @functools.wraps(method)
    def wrapped(self: Any, *args: Any) -> Any:
        result = method(self, *(unpack(a) for a in args))
        return pack(result) if self.on_ray else result

    return wrapped  # type: ignore[return-value]
