"""Hypothesis fuzzing of the decoders that read peers' bytes: a KV block (header and
tensors), a KV manifest, and the KV index on disk. Whatever the bytes, a decoder either
returns something that passes its own checks or raises its refusal (BlockRefused,
ManifestRefused; an unreadable index is ignored with a warning): never another exception.

Failing examples go to tests/python/fuzz-corpus (Hypothesis's example database, local and
gitignored) and are replayed first on the next run; what a run found is kept for good as
an @example below."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from edgellm.errors import BlockRefused, ManifestRefused
from edgellm.kv import block as blockfmt
from edgellm.kv.block import BlockMeta
from edgellm.kv.keys import ChainSpec, chain
from edgellm.kv.manifest import KVManifest
from edgellm.kv.store import INDEX_NAME, KVStore

CORPUS = DirectoryBasedExampleDatabase(str(Path(__file__).parent / "fuzz-corpus"))
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=CORPUS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SPEC = ChainSpec("bafkreimodel", "float32", 4)
TOKENS = list(range(100, 108))
KEYS = chain(SPEC, TOKENS)
HEADS, DIM = 2, 4
META = BlockMeta(SPEC.model_cid, 0, 2, "float32", 4, 4, tuple(TOKENS[4:8]), KEYS[1], KEYS[0])
LAYERS = [(torch.randn(HEADS, 4, DIM), torch.randn(HEADS, 4, DIM)) for _ in range(2)]
VALID = blockfmt.encode(META, LAYERS)
HEADER_END = 8 + struct.unpack("<Q", VALID[:8])[0]


def _decode(data: bytes) -> None:
    try:
        tensors = blockfmt.decode_tensors(data, META, HEADS, DIM, torch.float32)
    except BlockRefused:
        return
    # Accepted: exactly the layout the request expects, finite, nothing left over.
    assert tensors.rows.shape == (4, HEADS, 4, DIM)
    assert torch.isfinite(tensors.rows).all()
    (header,) = struct.unpack("<Q", data[:8])
    assert len(data) == 8 + header + tensors.rows.numel() * 4


@FUZZ
@given(st.binary(max_size=4096))
def test_block_any_bytes(data: bytes) -> None:
    _decode(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8))
def test_block_mutated(changes: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for at, value in changes:
        data[at] = value
    _decode(bytes(data))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(META.to_strings())), _json))
def test_block_header_fields(changes: dict) -> None:
    # Any value in any metadata field or tensor entry of an otherwise valid header.
    header = json.loads(VALID[8:HEADER_END])
    for key, value in changes.items():
        header["__metadata__"][key] = value if isinstance(value, str) else json.dumps(value)
        header["k.0"] = value
    raw = json.dumps(header).encode()
    _decode(struct.pack("<Q", len(raw)) + raw + VALID[HEADER_END:])


_manifest_doc = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["edgellm-kv-manifest/1", "x"]),
        "model_cid": _json,
        "dtype": _json,
        "block_size": _json,
        "providers": _json,
        "blocks": st.lists(
            st.fixed_dictionaries(
                {
                    "key": st.sampled_from([KEYS[0].hex(), "zz", ""]) | _json,
                    "position": _json,
                    "parts": st.lists(
                        st.dictionaries(
                            st.sampled_from(["layer_start", "layer_end", "cid", "size"]), _json
                        ),
                        max_size=3,
                    )
                    | _json,
                }
            ),
            max_size=3,
        )
        | _json,
    }
)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), _manifest_doc.map(lambda d: json.dumps(d).encode())))
def test_manifest(data: bytes) -> None:
    try:
        manifest = KVManifest.from_json(data)
    except ManifestRefused:
        return
    assert manifest.block_size >= 1
    assert all(len(b.key) == 32 for b in manifest.blocks)
    assert KVManifest.from_json(manifest.to_json()) == manifest


class _NoKubo:
    """The index is read before any Kubo call; a store over it never calls one here."""


@FUZZ
# Found by this test: an index that is valid JSON but not an object (or whose parts are not
# objects) crashed the backend at start-up.
@example(data=b"1")
@example(data=b'{"format":"edgellm-kv-index/1","parts":[1]}')
@example(
    data=b'{"format":"edgellm-kv-index/1","parts":[{"key":"zz","layer_start":0,'
    b'"layer_end":1,"cid":"b","size":1,"last_used":0}]}'
)
@given(
    data=st.one_of(
        st.binary(max_size=1024),
        st.fixed_dictionaries(
            {"format": st.sampled_from(["edgellm-kv-index/1", "x"]), "parts": _json}
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_kv_index(tmp_path_factory, data: bytes) -> None:
    directory = tmp_path_factory.mktemp("index")
    (directory / INDEX_NAME).write_bytes(data)
    store = KVStore(_NoKubo(), directory, 1 << 20)  # type: ignore[arg-type]
    for part in store.entries():
        assert isinstance(part.cid, str) and part.size >= 0
        assert store.has(*part.slot)
