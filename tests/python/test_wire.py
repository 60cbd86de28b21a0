"""Tensors between the driver and stage actors travel as numpy arrays (cluster/wire.py):
every dtype a stage uses comes back equal, through pickle as Ray sends it, and what is not
a packed tensor is refused with a ClusterError."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from edgellm.cluster import wire
from edgellm.errors import ClusterError

TENSORS = [
    torch.randn(1, 1, 576),
    torch.randn(3, 4).to(torch.bfloat16),
    torch.randn(2, 3).half(),
    torch.randn(2, 2, dtype=torch.float64),
    torch.tensor([[101, 7, 9000]]),
    torch.tensor([1, -2], dtype=torch.int8),
    torch.tensor([True, False]),
    torch.randn(4, 6)[:, ::2],  # not contiguous
    torch.tensor(3.5),  # no dimensions
    torch.empty(1, 0, 576),
]


@pytest.mark.parametrize("tensor", TENSORS, ids=lambda t: f"{t.dtype}{tuple(t.shape)}")
def test_a_tensor_comes_back_equal(tensor: torch.Tensor) -> None:
    carried = (tensor, [(0.5, 1e-3)])  # forward_checked's shape: a tensor beside floats
    packed = wire.pack(carried)
    assert isinstance(packed[0], wire.WireTensor)
    assert isinstance(packed[0].data, np.ndarray)
    back, floats = wire.unpack(pickle.loads(pickle.dumps(packed, protocol=5)))
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)
    assert floats == [(0.5, 1e-3)]


def test_what_is_not_a_tensor_passes_through() -> None:
    value = ("sid", [1, 2], {"a": torch.ones(1)}, None)
    assert wire.pack(value) is not value
    assert wire.pack(value)[2]["a"] is value[2]["a"]  # only tuples are walked
    assert wire.unpack(wire.pack(value))[:2] == ("sid", [1, 2])


def test_read_only_elements_give_a_writable_tensor() -> None:
    data = np.arange(4, dtype=np.int32)
    data.flags.writeable = False  # as Ray's buffers are
    tensor = wire.WireTensor(data, "int32").tensor()
    tensor += 1  # a stage may write into what it was given
    assert tensor.tolist() == [1, 2, 3, 4] and data.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("data", "dtype", "message"),
    [
        (np.zeros(3, np.int64), "float32", "int64 elements for a float32 tensor"),
        (np.zeros(3, np.int32), "load", "unknown dtype 'load'"),
        (np.zeros(3, np.int32), 5, "unknown dtype 5"),
        (np.zeros(3, np.float32), "float32", "float32 elements for a float32 tensor"),
        ("abc", "float32", "str as a tensor's elements"),
    ],
)
def test_a_malformed_tensor_is_refused(data, dtype, message: str) -> None:
    with pytest.raises(ClusterError, match=message):
        wire.unpack((wire.WireTensor(data, dtype),))
