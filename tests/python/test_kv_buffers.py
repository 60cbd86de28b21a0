"""The prefill peer's pool of encode buffers (edgellm.kv.buffers): blocks encoded into a
reused buffer are byte for byte the blocks encoded into new memory, whatever the buffer
held before; a buffer serves again once given back, and only the pool's own come back."""

from __future__ import annotations

import pytest
import torch

from edgellm.kv import block as blockfmt
from edgellm.kv.buffers import HEADER_ROOM, BufferPool
from tests.python.test_kv_block import _layers, _meta


def test_fill_adds_buffers_up_to_the_bytes_and_no_more() -> None:
    pool = BufferPool(1000)
    assert pool.fill(3500) == 3
    assert pool.fill(3500) == 3  # already there
    assert pool.fill(5000) == 5
    assert pool.free == 5


def test_a_take_is_exactly_the_size_asked_and_comes_back_once_given() -> None:
    pool = BufferPool(1000)
    pool.fill(2000)
    a, b = pool.take(600), pool.take(1000)
    assert (len(a), len(b)) == (600, 1000)
    assert isinstance(a, memoryview) and not a.readonly
    assert pool.free == 0 and pool.reused == 2
    c = pool.take(10)  # none free: new memory
    assert isinstance(c, bytearray) and pool.fresh == 1
    pool.give([a, c])
    assert pool.free == 1  # only the pool's own
    pool.give([a])  # twice: still one buffer
    assert pool.free == 1
    again = pool.take(700)
    assert isinstance(again, memoryview) and again.obj is a.obj


def test_over_the_capacity_is_new_memory() -> None:
    pool = BufferPool(1000)
    pool.fill(1000)
    big = pool.take(1001)
    assert isinstance(big, bytearray) and len(big) == 1001
    assert pool.free == 1 and pool.fresh == 1


def test_a_foreign_buffer_of_the_same_size_is_not_taken_in() -> None:
    pool = BufferPool(1000)
    pool.fill(1000)
    pool.take(1000)
    pool.give([memoryview(bytearray(1000)), bytearray(1000), b"x" * 1000])
    assert pool.free == 0


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_pool_needs_room(capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        BufferPool(capacity)


def test_a_reused_buffer_encodes_the_same_bytes_as_new_memory() -> None:
    """The encoder writes every byte: what a buffer held before does not show."""
    meta, layers = _meta(), _layers()
    plain = blockfmt.encode(meta, layers)
    pool = BufferPool.for_blocks(len(plain))
    assert pool.capacity == len(plain) + HEADER_ROOM
    pool.fill(pool.capacity)
    dirty = pool.take(pool.capacity)
    dirty[:] = b"\xff" * pool.capacity
    pool.give([dirty])
    encoded = blockfmt.encode_buffer(meta, layers, pool.take)
    assert pool.reused == 2
    assert bytes(encoded) == plain
    k, v = blockfmt.decode(bytearray(encoded), meta, 3, 8, torch.float32)[0]
    assert torch.equal(k, layers[0][0]) and torch.equal(v, layers[0][1])
