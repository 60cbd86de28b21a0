"""Block keys, the block format and its refusals, layer groups, the manifest, kv config."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

from edgellm.config import load_config
from edgellm.errors import BlockRefused, InvalidRequest, ManifestRefused
from edgellm.kv import block as blockfmt
from edgellm.kv.block import BLOCK_BUDGET, KUBO_BLOCK_LIMIT, BlockMeta
from edgellm.kv.ipfs import api_url, gateway_url
from edgellm.kv.keys import ROOT, ChainSpec, block_key, chain
from edgellm.kv.manifest import BlockRef, KVManifest, PartRef

SPEC = ChainSpec("bafkreimodel", "float32", 4)
TOKENS = list(range(100, 114))  # 3 full blocks of 4, 2 left over


def test_keys_chain_and_only_full_blocks_are_keyed() -> None:
    keys = chain(SPEC, TOKENS)
    assert len(keys) == 3
    assert keys[0] == block_key(ROOT, SPEC, TOKENS[:4])
    assert keys[2] == block_key(keys[1], SPEC, TOKENS[8:12])
    assert chain(SPEC, TOKENS[:12] + [1, 2, 3, 4])[:3] == keys  # equal prefixes, equal keys


@pytest.mark.parametrize(
    "change",
    [
        lambda s, t: (replace(s, model_cid="bafkreiother"), t),
        lambda s, t: (replace(s, dtype="bfloat16"), t),
        lambda s, t: (s, [t[0] + 1, *t[1:]]),  # the first token changes every key
    ],
)
def test_any_change_changes_the_keys(change) -> None:
    spec, tokens = change(SPEC, TOKENS)
    assert not set(chain(spec, tokens)) & set(chain(SPEC, TOKENS))


def test_block_size_is_in_the_key() -> None:
    two = ChainSpec("bafkreimodel", "float32", 2)
    assert chain(two, TOKENS[:4])[1] != chain(SPEC, TOKENS[:4])[0]


def test_key_encoding_is_documented_bytes() -> None:
    import hashlib

    raw = (
        ROOT
        + struct.pack(">H", 12)
        + b"bafkreimodel"
        + struct.pack(">H", 7)
        + b"float32"
        + struct.pack(">5I", 4, 100, 101, 102, 103)
    )
    assert chain(SPEC, TOKENS)[0] == hashlib.sha256(raw).digest()


KV_HEADS, HEAD_DIM = 3, 8


def _meta(**changes) -> BlockMeta:
    keys = chain(SPEC, TOKENS)
    base = BlockMeta(
        model_cid=SPEC.model_cid,
        layer_start=2,
        layer_end=5,
        dtype="float32",
        block_size=4,
        position=4,
        token_ids=tuple(TOKENS[4:8]),
        key=keys[1],
        parent=keys[0],
    )
    return replace(base, **changes)


def _layers(n=3, shape=(KV_HEADS, 4, HEAD_DIM), dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype))
        for _ in range(n)
    ]


def _decode(data: bytes, expected: BlockMeta | None = None):
    return blockfmt.decode(data, expected or _meta(), KV_HEADS, HEAD_DIM, torch.float32)


def test_round_trip_and_documented_metadata(tmp_path: Path) -> None:
    layers = _layers()
    data = blockfmt.encode(_meta(), layers)
    out = _decode(data)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(out, layers, strict=True)
    )
    path = tmp_path / "block.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert sorted(f.keys()) == sorted(f"{kind}.{i}" for i in (2, 3, 4) for kind in "kv")
    assert meta["format"] == "edgellm-kv/1"
    assert (meta["layer_start"], meta["layer_end"], meta["position"]) == ("2", "5", "4")
    assert json.loads(meta["token_ids"]) == TOKENS[4:8]
    assert meta["key"] == chain(SPEC, TOKENS)[1].hex()
    assert meta["parent"] == chain(SPEC, TOKENS)[0].hex()
    assert (meta["model_cid"], meta["dtype"], meta["block_size"]) == (
        SPEC.model_cid,
        "float32",
        "4",
    )


def test_safetensors_reads_what_encode_writes() -> None:
    layers = _layers()
    tensors = load_safetensors(blockfmt.encode(_meta(), layers))
    assert set(tensors) == {f"{kind}.{i}" for i in (2, 3, 4) for kind in "kv"}
    for offset, (k, v) in enumerate(layers):
        assert torch.equal(tensors[f"k.{2 + offset}"], k)
        assert torch.equal(tensors[f"v.{2 + offset}"], v)


# A block built in a fresh interpreter: the same K/V and metadata as _meta() and _layers().
_ENCODE_ELSEWHERE = """
import sys
from tests.python.test_kv_block import _layers, _meta
from edgellm.kv import block
sys.stdout.buffer.write(block.encode(_meta(), _layers()))
"""


def test_the_same_block_has_the_same_bytes_in_every_process() -> None:
    # Peers that store the same block must make the same CID. safetensors' own writer put
    # the metadata in a per-process random order (a Rust HashMap): 10 keys, two processes,
    # two CIDs for one block.
    here = blockfmt.encode(_meta(), _layers())
    repo = Path(__file__).resolve().parents[2]
    for _ in range(2):
        there = subprocess.run(
            [sys.executable, "-c", _ENCODE_ELSEWHERE],
            cwd=repo,
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        assert there == here


def test_tensors_of_different_shapes_are_not_a_block() -> None:
    layers = _layers()
    layers[1] = (layers[1][0], torch.zeros(KV_HEADS, 5, HEAD_DIM))
    with pytest.raises(ValueError, match="one shape and dtype"):
        blockfmt.encode(_meta(), layers)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not safetensors"),
        (os.urandom(5000), "not safetensors"),
        (struct.pack("<Q", 10) + b"not json!!", "not safetensors"),
        (blockfmt.encode(_meta(model_cid="bafkreiother"), _layers()), "another model"),
        (blockfmt.encode(_meta(token_ids=(1, 2, 3, 4)), _layers()), "token ids differ"),
        (blockfmt.encode(_meta(position=8), _layers()), "position 8, expected 4"),
        (blockfmt.encode(_meta(dtype="float16"), _layers()), "dtype 'float16'"),
        (blockfmt.encode(_meta(layer_end=4), _layers(2)), "layer range (2, 4)"),
        (blockfmt.encode(_meta(block_size=8), _layers()), "block_size 8"),
        (blockfmt.encode(_meta(key=bytes(32)), _layers()), "key"),
        (blockfmt.encode(_meta(), _layers(shape=(KV_HEADS, 4, 4))), "shape of k.2"),
        (blockfmt.encode(_meta(), _layers(shape=(2, 4, HEAD_DIM))), "shape of k.2"),
        (blockfmt.encode(_meta(), _layers(dtype=torch.float16)), "dtype of k.2"),
    ],
    ids=[
        "empty",
        "random",
        "header-not-json",
        "other-model",
        "wrong-tokens",
        "wrong-position",
        "wrong-dtype-meta",
        "layer-range",
        "block-size",
        "key",
        "head-dim",
        "kv-heads",
        "tensor-dtype",
    ],
)
def test_refusals(data: bytes, reason: str) -> None:
    with pytest.raises(BlockRefused) as info:
        _decode(data)
    assert reason in str(info.value)


def test_plain_safetensors_without_metadata_is_refused() -> None:
    from safetensors.torch import save

    with pytest.raises(BlockRefused, match="no safetensors metadata"):
        _decode(save({"k.2": torch.zeros(1)}))


def test_extra_tensor_is_refused() -> None:
    from safetensors.torch import load, save

    data = blockfmt.encode(_meta(), _layers())
    tensors = {**load(data), "x": torch.zeros(1)}
    with pytest.raises(BlockRefused, match="tensor names"):
        _decode(save(tensors, metadata=_meta().to_strings()))


def test_layer_groups_keep_blocks_under_kubo_limit() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads, head dim 64, fp32, 16 tokens: one block.
    per = blockfmt.layer_bytes(16, 3, 64, torch.float32)
    assert per == 2 * 3 * 16 * 64 * 4
    assert blockfmt.layer_groups(0, 30, per) == [(0, 30)]
    # 64 tokens a block: 30 layers take 5.9 MB, so near-equal groups under the budget.
    per = blockfmt.layer_bytes(64, 3, 64, torch.float32)
    groups = blockfmt.layer_groups(0, 30, per)
    assert groups[0][0] == 0 and groups[-1][1] == 30
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    assert all((e - s) * per + blockfmt.HEADER_RESERVE <= BLOCK_BUDGET for s, e in groups)
    assert max(e - s for s, e in groups) - min(e - s for s, e in groups) <= 1
    with pytest.raises(ValueError, match="smaller block size"):
        blockfmt.layer_groups(0, 30, BLOCK_BUDGET)
    assert BLOCK_BUDGET < KUBO_BLOCK_LIMIT


def test_encoded_block_size_is_checked() -> None:
    meta = _meta(block_size=4)
    big = [(torch.zeros(KV_HEADS, 4, 20000), torch.zeros(KV_HEADS, 4, 20000)) for _ in range(3)]
    with pytest.raises(ValueError, match="budget"):
        blockfmt.encode(meta, big)


def _manifest() -> KVManifest:
    keys = chain(SPEC, TOKENS)
    blocks = tuple(
        BlockRef(k, i * 4, (PartRef(0, 13, f"bafkrei{i}a", 10), PartRef(13, 30, f"bafkrei{i}b")))
        for i, k in enumerate(keys)
    )
    return KVManifest(SPEC.model_cid, "float32", 4, blocks, ("/ip4/127.0.0.1/tcp/1/p2p/12D3x",))


def test_manifest_round_trip() -> None:
    manifest = _manifest()
    again = KVManifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.parts(chain(SPEC, TOKENS)[1])[1] == PartRef(13, 30, "bafkrei1b", 0)
    assert again.parts(bytes(32)) == ()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="other"),
        lambda d: d.update(blocks="x"),
        lambda d: d["blocks"][0].update(key="zz"),
        lambda d: d["blocks"][0].update(key="00"),
        lambda d: d["blocks"][0]["parts"][0].update(layer_end=0),
        lambda d: d["blocks"][0]["parts"][0].update(cid=""),
        lambda d: d.update(block_size=0),
        lambda d: d.pop("model_cid"),
        # A flood of providers, each of which would be dialled before the fetch.
        lambda d: d.update(providers=[f"/ip4/10.0.{i // 250}.{i % 250}/tcp/1" for i in range(65)]),
    ],
)
def test_bad_manifests_are_rejected(mutate) -> None:
    doc = json.loads(_manifest().to_json())
    mutate(doc)
    with pytest.raises(ManifestRefused):
        KVManifest.from_json(json.dumps(doc).encode())
    with pytest.raises(ManifestRefused):
        KVManifest.from_json(b"\xff not json")


def test_kv_config_layers(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    config = load_config(env=env)
    assert not config.kv.enabled
    assert config.kv.dir == config.data_dir / "kv"
    assert (config.kv.block_size, config.kv.max_store_mb) == (16, 1024)
    path = tmp_path / "c.yaml"
    path.write_text("backend:\n  kv:\n    ipfs_api: http://file:1\n    block_size: 32\n")
    assert load_config(path, env=env).kv.block_size == 32
    env["EDGELLM_IPFS_API"] = "http://env:2"
    assert load_config(path, env=env).kv.ipfs_api == "http://env:2"
    flags = {"kv": {"ipfs_api": "http://flag:3"}}
    assert load_config(path, flags, env=env).kv.ipfs_api == "http://flag:3"
    assert load_config(path, {"kv": {"ipfs_api": None}}, env=env).kv.ipfs_api == "http://env:2"
    del env["EDGELLM_IPFS_API"]
    assert load_config(path, env=env).kv.ipfs_gateway == ""
    env["EDGELLM_IPFS_GATEWAY"] = "http://127.0.0.1:8080/"
    assert load_config(path, env=env).kv.ipfs_gateway == "http://127.0.0.1:8080"
    del env["EDGELLM_IPFS_GATEWAY"]
    bad_values = (
        "kv: 3",
        "kv: {colour: red}",
        "kv: {block_size: 0}",
        "kv: {block_size: x}",
        "kv: {ipfs_api: 'localhost:5001'}",
        "kv: {ipfs_gateway: '127.0.0.1:8080'}",
        "kv: {ipfs_gateway: 'http://'}",
    )
    for bad in bad_values:
        path.write_text(f"backend:\n  {bad}\n")
        with pytest.raises(InvalidRequest):
            load_config(path, env=env)


def test_api_url_forms() -> None:
    assert api_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_url("http://127.0.0.1:5001/") == "http://127.0.0.1:5001"
    with pytest.raises(ValueError):
        api_url("127.0.0.1:5001")
    # The node's own Kubo listens on unix sockets in its repository.
    assert api_url("unix:/data/ipfs/api.sock") == "unix:/data/ipfs/api.sock"
    assert api_url("/unix/data/ipfs/api.sock") == "unix:/data/ipfs/api.sock"
    assert gateway_url("unix:///data/ipfs/gateway.sock") == "unix:/data/ipfs/gateway.sock"
    with pytest.raises(ValueError):
        api_url("unix:relative.sock")


def test_ray_nodes_get_the_ipfs_api(tmp_path: Path) -> None:
    from edgellm.cluster.manager import ClusterManager

    manager = ClusterManager(
        tmp_path, tmp_path, ipfs_api="http://127.0.0.1:5001", ipfs_gateway="http://127.0.0.1:8"
    )
    env = manager._config("127.0.0.1", None, None).env
    assert env["EDGELLM_IPFS_API"] == "http://127.0.0.1:5001"
    assert env["EDGELLM_IPFS_GATEWAY"] == "http://127.0.0.1:8"
    assert (
        "EDGELLM_IPFS_API"
        not in ClusterManager(tmp_path, tmp_path)._config("127.0.0.1", None, None).env
    )


def _with_header(data: bytes, edit) -> bytes:
    """The block with its safetensors header changed by `edit` (tensor bytes kept)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    edit(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


@pytest.mark.parametrize(
    "change",
    [
        lambda a, b: [a, a + 7],  # too short for the tensor's shape
        lambda a, b: [a - b - 4, a - 4],  # before the data
        lambda a, b: [a + 10**9, b + 10**9],  # past the end
        lambda a, b: [str(a), str(b)],  # not integers
        lambda a, b: [a],  # not a pair
    ],
)
def test_bad_data_offsets_are_refused(change) -> None:
    # decode views the block's bytes without copying, so it checks offsets itself.
    data = blockfmt.encode(_meta(), _layers())

    def edit(header: dict) -> None:
        entry = header["k.2"]
        entry["data_offsets"] = change(*entry["data_offsets"])

    with pytest.raises(BlockRefused, match="data offsets"):
        _decode(_with_header(data, edit))


def test_truncated_block_is_refused() -> None:
    data = blockfmt.encode(_meta(), _layers())
    with pytest.raises(BlockRefused):
        _decode(data[:-100])


def test_decoded_tensors_equal_encoded() -> None:
    layers = _layers()
    decoded = _decode(blockfmt.encode(_meta(), layers))
    for (k, v), (dk, dv) in zip(layers, decoded, strict=True):
        assert torch.equal(k, dk) and torch.equal(v, dv)


def _poisoned(value: float, layer: int = 1) -> list:
    layers = _layers()
    layers[layer][1][0, 2, 3] = value
    return layers


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"]
)
def test_non_finite_values_are_refused(value: float) -> None:
    # One poisoned value anywhere would make every sampling step of the request fail.
    with pytest.raises(BlockRefused, match="non-finite"):
        _decode(blockfmt.encode(_meta(), _poisoned(value)))


def test_trailing_bytes_are_refused() -> None:
    data = blockfmt.encode(_meta(), _layers())
    with pytest.raises(BlockRefused, match="3 trailing bytes"):
        _decode(data + b"abc")


def test_overlapping_tensors_are_refused() -> None:
    # Two names over the same bytes (and the freed room used for anything else).
    data = blockfmt.encode(_meta(), _layers())

    def edit(header: dict) -> None:
        header["v.2"]["data_offsets"] = header["k.2"]["data_offsets"]

    with pytest.raises(BlockRefused, match="back to back"):
        _decode(_with_header(data, edit))
