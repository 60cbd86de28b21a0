"""Content identifiers for model weights, as IPFS computes them.

`file_cid` returns the CID that `ipfs add --cid-version=1` gives the same file
with Kubo's defaults (256 KiB chunks, raw leaves, balanced DAG of at most 174
links per node, dag-pb + UnixFS inner nodes, sha2-256). So a weights CID in a
capability record is also the address the weights can be fetched by over IPFS.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

_CODEC_RAW = 0x55
_CODEC_DAG_PB = 0x70
_SHA2_256 = 0x12
_UNIXFS_FILE = 2

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Node:
    cid: bytes  # binary CIDv1
    file_size: int  # bytes of file content below this node
    dag_size: int  # encoded bytes of this node and everything below it (dag-pb Tsize)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, 2) + _varint(len(value)) + value


def _uint_field(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(value)


def _cid_v1(codec: int, data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()
    return _varint(1) + _varint(codec) + _varint(_SHA2_256) + _varint(len(digest)) + digest


def cid_to_string(cid: bytes) -> str:
    """Multibase base32 (lower case, no padding), as IPFS prints CIDv1."""
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def raw_cid(data: bytes) -> str:
    """CIDv1 of one raw IPFS block holding exactly `data` (what `ipfs block put` gives)."""
    return cid_to_string(_cid_v1(_CODEC_RAW, data))


def _leaf(chunk: bytes) -> _Node:
    return _Node(_cid_v1(_CODEC_RAW, chunk), len(chunk), len(chunk))


def _inner(children: list[_Node]) -> _Node:
    unixfs = _uint_field(1, _UNIXFS_FILE) + _uint_field(3, sum(c.file_size for c in children))
    for child in children:
        unixfs += _uint_field(4, child.file_size)
    # dag-pb's canonical form writes the links (field 2) before the data (field 1).
    encoded = b"".join(
        _bytes_field(2, _bytes_field(1, c.cid) + _bytes_field(2, b"") + _uint_field(3, c.dag_size))
        for c in children
    )
    encoded += _bytes_field(1, unixfs)
    size = len(encoded) + sum(c.dag_size for c in children)
    return _Node(_cid_v1(_CODEC_DAG_PB, encoded), sum(c.file_size for c in children), size)


class _Chunks:
    """The file's chunks, one at a time, with one chunk of look-ahead for `done`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._next = next(chunks, None)

    @property
    def done(self) -> bool:
        return self._next is None

    def take(self) -> bytes:
        chunk, self._next = self._next, next(self._chunks, None)
        return chunk if chunk is not None else b""


def _fill(chunks: _Chunks, depth: int, first: _Node | None = None) -> _Node:
    children = [first] if first is not None else []
    while len(children) < MAX_LINKS and not chunks.done:
        children.append(_leaf(chunks.take()) if depth == 1 else _fill(chunks, depth - 1))
    return _inner(children)


def balanced_dag_cid(chunks: Iterator[bytes]) -> str:
    """CID of a file given as chunks, laid out as Kubo's balanced importer does."""
    source = _Chunks(chunks)
    root = _leaf(source.take())
    depth = 1
    while not source.done:
        root = _fill(source, depth, first=root)
        depth += 1
    return cid_to_string(root.cid)


def _read_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            done += len(chunk)
            if progress is not None:
                progress(done, total)
            yield chunk


def file_cid(path: Path | str, progress: Progress | None = None) -> str:
    """The CID `ipfs add --cid-version=1 FILE` prints for this file."""
    return balanced_dag_cid(_read_chunks(Path(path), progress))
