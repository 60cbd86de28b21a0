"""The block format: one IPFS block = K and V of `block_size` tokens for a group of layers.

A block is a safetensors file. Tensors are named `k.<layer>` and `v.<layer>` (absolute
layer index in the model), each shaped [kv_heads, block_size, head_dim] in the engine's
KV dtype. The safetensors metadata (all values strings) says what it is:

    format       "edgellm-kv/1"
    model_cid    CID of the model's weights (model.safetensors)
    layer_start  first layer held, inclusive
    layer_end    last layer held, exclusive
    dtype        KV dtype, e.g. "float32"
    block_size   tokens per block
    position     position of the block's first token in the prompt (index * block_size)
    token_ids    the block's token ids, a JSON list
    key          h_i of this block, hex (see keys.py)
    parent       h_{i-1}, hex (64 zeros for the first block)

A stage whose layers do not fit in one IPFS block under BLOCK_BUDGET bytes (Kubo refuses
blocks over 1 MiB) splits them into contiguous layer groups (`layer_groups`); a logical
block is then several IPFS blocks. Before use, `decode` checks every field, every tensor
name, shape and dtype against what the request expects, and refuses anything else.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch

from edgellm.errors import BlockRefused

FORMAT = "edgellm-kv/1"
KUBO_BLOCK_LIMIT = 1 << 20
# Bytes an encoded block may take, header included; leaves room under Kubo's limit.
BLOCK_BUDGET = 1_000_000
# Room kept for the safetensors header and metadata when sizing layer groups.
HEADER_RESERVE = 16_384
_MAX_HEADER = 1 << 16
_ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
}

KV = tuple[torch.Tensor, torch.Tensor]

# decode_tensors() views fetched bytes as tensors without copying and never writes them;
# torch warns that bytes are read-only.
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class BlockMeta:
    model_cid: str
    layer_start: int
    layer_end: int
    dtype: str
    block_size: int
    position: int
    token_ids: tuple[int, ...]
    key: bytes
    parent: bytes

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "model_cid": self.model_cid,
            "layer_start": str(self.layer_start),
            "layer_end": str(self.layer_end),
            "dtype": self.dtype,
            "block_size": str(self.block_size),
            "position": str(self.position),
            "token_ids": json.dumps(list(self.token_ids), separators=(",", ":")),
            "key": self.key.hex(),
            "parent": self.parent.hex(),
        }

    @classmethod
    def from_strings(cls, meta: dict[str, str]) -> BlockMeta:
        if meta.get("format") != FORMAT:
            raise BlockRefused(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            tokens = json.loads(meta["token_ids"])
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ValueError("token_ids is not a list of integers")
            return cls(
                model_cid=meta["model_cid"],
                layer_start=int(meta["layer_start"]),
                layer_end=int(meta["layer_end"]),
                dtype=meta["dtype"],
                block_size=int(meta["block_size"]),
                position=int(meta["position"]),
                token_ids=tuple(tokens),
                key=bytes.fromhex(meta["key"]),
                parent=bytes.fromhex(meta["parent"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise BlockRefused(f"bad metadata: {exc!r}") from exc


def layer_bytes(block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
    """Tensor bytes one layer adds to a block (K and V)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * kv_heads * block_size * head_dim * itemsize


def layer_groups(
    start: int, end: int, per_layer: int, budget: int = BLOCK_BUDGET
) -> list[tuple[int, int]]:
    """Split layers [start, end) into the fewest near-equal contiguous groups whose
    tensors fit in `budget` bytes with HEADER_RESERVE to spare."""
    fit = (budget - HEADER_RESERVE) // per_layer
    if fit < 1:
        raise ValueError(
            f"one layer's K and V ({per_layer} bytes) exceed the {budget}-byte block budget; "
            "use a smaller block size"
        )
    count = end - start
    groups = -(-count // fit)
    base, extra = divmod(count, groups)
    bounds, at = [], start
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        bounds.append((at, at + size))
        at += size
    return bounds


def encode(meta: BlockMeta, kv: Sequence[KV]) -> bytes:
    """`encode_buffer`'s bytes, immutable (one copy more)."""
    return bytes(encode_buffer(meta, kv))


def encode_buffer(
    meta: BlockMeta,
    kv: Sequence[KV],
    alloc: Callable[[int], bytearray | memoryview] = bytearray,
) -> bytearray | memoryview:
    """`kv[i]` holds layer `meta.layer_start + i`, each tensor [kv_heads, block_size, head_dim],
    encoded into `alloc(size)` (every byte of it is written: it need not be zeroed).

    The bytes are a safetensors file, written here rather than by safetensors' `save` for
    two reasons. Its header is canonical: the metadata in `BlockMeta.to_strings` order,
    the tensors by name (safetensors' own order), so the same K/V and metadata give the
    same bytes, hence the same CID, on every peer; safetensors (0.8) writes its metadata
    from a Rust HashMap, in a random order per process, so two peers storing the same
    block made two CIDs. And it is one copy: the 60 tensors of a block go straight into
    the output buffer (safetensors' `save` took ~5 ms a block, ~500 ms for a 1,568-token
    prompt's 98 blocks; this about 1 ms a block)."""
    if len(kv) != meta.layer_end - meta.layer_start:
        raise ValueError(f"{len(kv)} layers for range [{meta.layer_start}, {meta.layer_end})")
    tensors: dict[str, torch.Tensor] = {}
    for offset, (k, v) in enumerate(kv):
        layer = meta.layer_start + offset
        tensors[f"k.{layer}"] = k
        tensors[f"v.{layer}"] = v
    if not tensors:
        raise ValueError("a block holds at least one layer")
    first = next(iter(tensors.values()))
    if first.dtype not in _ST_DTYPES:
        raise ValueError(f"no safetensors name for dtype {first.dtype}")
    if any(t.shape != first.shape or t.dtype != first.dtype for t in tensors.values()):
        raise ValueError("a block's K and V tensors must share one shape and dtype")
    names = sorted(tensors)
    size = first.numel() * first.dtype.itemsize
    entry = {"dtype": _ST_DTYPES[first.dtype], "shape": list(first.shape)}
    header: dict = {"__metadata__": meta.to_strings()}
    for j, name in enumerate(names):
        header[name] = {**entry, "data_offsets": [j * size, (j + 1) * size]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes
    base = 8 + len(text)
    total = base + len(names) * size
    if total > BLOCK_BUDGET:
        raise ValueError(f"encoded block is {total} bytes, over the {BLOCK_BUDGET} budget")
    out = alloc(total)
    out[:base] = struct.pack("<Q", len(text)) + text
    rows = torch.frombuffer(out, dtype=first.dtype, offset=base, count=len(names) * first.numel())
    torch.stack([tensors[n] for n in names], out=rows.view(len(names), *first.shape))
    return out


def read_meta(data: bytes) -> tuple[BlockMeta, dict]:
    """The metadata and tensor table of a block, without loading tensors."""
    if len(data) < 8:
        raise BlockRefused(f"not safetensors: {len(data)} bytes")
    (size,) = struct.unpack("<Q", data[:8])
    if size > _MAX_HEADER or 8 + size > len(data):
        raise BlockRefused(f"not safetensors: header length {size} for {len(data)} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + size]))  # a memoryview too (a P/D handoff)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BlockRefused(f"not safetensors: header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise BlockRefused("not an edgellm KV block: no safetensors metadata")
    meta = BlockMeta.from_strings(header.pop("__metadata__"))
    return meta, header


def _expect(what: str, got, want) -> None:
    if got != want:
        raise BlockRefused(f"{what} {got!r}, expected {want!r}")


@dataclass(frozen=True)
class BlockTensors:
    """A verified block's K and V as one tensor over its own bytes (no copy; never
    written): `rows[j]` is the j-th tensor in the file, [kv_heads, block_size, head_dim],
    and `slots[j]` its place in layer order: 2 * (layer - layer_start), +1 for V."""

    layer_start: int
    layer_end: int
    rows: torch.Tensor
    slots: torch.Tensor

    def layers(self) -> list[KV]:
        ordered = torch.empty_like(self.rows).index_copy_(0, self.slots, self.rows)
        return [(ordered[2 * i], ordered[2 * i + 1]) for i in range(len(ordered) // 2)]


def decode(
    data: bytes, expected: BlockMeta, kv_heads: int, head_dim: int, dtype: torch.dtype
) -> list[KV]:
    """K and V per layer of a block that is exactly `expected`, else BlockRefused."""
    return decode_tensors(data, expected, kv_heads, head_dim, dtype).layers()


def decode_tensors(
    data: bytes, expected: BlockMeta, kv_heads: int, head_dim: int, dtype: torch.dtype
) -> BlockTensors:
    """The tensors of a block that is exactly `expected` (layer range included), else
    BlockRefused."""
    meta, table = read_meta(data)
    if meta.model_cid != expected.model_cid:
        raise BlockRefused(
            f"block of another model: model_cid {meta.model_cid}, expected {expected.model_cid}"
        )
    _expect("dtype", meta.dtype, expected.dtype)
    _expect("block_size", meta.block_size, expected.block_size)
    _expect("position", meta.position, expected.position)
    _expect(
        "layer range",
        (meta.layer_start, meta.layer_end),
        (expected.layer_start, expected.layer_end),
    )
    if meta.token_ids != expected.token_ids:
        raise BlockRefused(f"token ids differ from the prompt's at position {expected.position}")
    _expect("key", meta.key.hex(), expected.key.hex())
    _expect("parent", meta.parent.hex(), expected.parent.hex())
    start = expected.layer_start
    slot_of = {
        f"{kind}.{layer}": 2 * (layer - start) + side
        for layer in range(start, expected.layer_end)
        for side, kind in enumerate("kv")
    }
    _expect("tensor names", set(table), set(slot_of))
    shape = [kv_heads, expected.block_size, head_dim]
    size = kv_heads * expected.block_size * head_dim * dtype.itemsize
    code = _ST_DTYPES.get(dtype)
    base = 8 + struct.unpack("<Q", data[:8])[0]
    starts = {}
    for name in slot_of:  # one quick pass (60 tensors a block); the reason only on failure
        entry = table[name]
        offsets = entry.get("data_offsets") if type(entry) is dict else None
        if (
            offsets is None
            or entry.get("shape") != shape
            or entry.get("dtype") != code
            or type(offsets) is not list
            or len(offsets) != 2
            or type(offsets[0]) is not int
            or type(offsets[1]) is not int
            or offsets[1] - offsets[0] != size
            or offsets[0] < 0
            or base + offsets[1] > len(data)
        ):
            _refuse_entry(name, entry, shape, code, size, base, len(data))
        starts[name] = offsets[0]
    order = sorted(slot_of, key=starts.__getitem__)
    # The tensors must tile the data exactly, back to back from the header on, as
    # safetensors writes them: no gap, no overlap, nothing after the last one.
    if any(starts[n] != j * size for j, n in enumerate(order)):
        raise BlockRefused("not safetensors: tensors do not lie back to back")
    end = base + len(order) * size
    if end != len(data):
        raise BlockRefused(f"{len(data) - end} trailing bytes after the tensors")
    flat = torch.frombuffer(
        data, dtype=dtype, count=len(order) * size // dtype.itemsize, offset=base
    )
    rows = flat.view(len(order), *shape)
    _refuse_non_finite(rows)
    slots = torch.tensor([slot_of[n] for n in order], dtype=torch.long)
    return BlockTensors(expected.layer_start, expected.layer_end, rows, slots)


def _refuse_non_finite(rows: torch.Tensor) -> None:
    """Refuse NaN, infinities, and values so large that their float32 sum overflows (no
    real K/V comes near): one sum over the block costs ~0.1 ms, a full isfinite ~15x that,
    and any NaN or infinity makes the sum non-finite."""
    if not torch.isfinite(rows.sum(dtype=torch.float32)):
        raise BlockRefused("non-finite or out-of-range K/V values")


def _refuse_entry(name: str, entry, shape, code, size: int, base: int, length: int) -> NoReturn:
    """Raise BlockRefused saying what is wrong with a tensor's entry in the header."""
    if not isinstance(entry, dict):
        raise BlockRefused(f"not safetensors: bad entry for {name}")
    _expect(f"shape of {name}", entry.get("shape"), shape)
    _expect(f"dtype of {name}", entry.get("dtype"), code)
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
        or offsets[1] - offsets[0] != size
        or offsets[0] < 0
        or base + offsets[1] > length
    ):
        raise BlockRefused(f"not safetensors: bad data offsets {offsets!r} for {name}")
    raise BlockRefused(f"not safetensors: bad entry for {name}")
