"""KVControl.PrefixKeys, HeldKeys and BlockManifest: what the Go node announces and serves."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from edgellm.kv.keys import ChainSpec
from edgellm.kv.manifest import BlockRef, KVManifest, PartRef
from edgellm.server.kv import HeldKeyLog, manifest_of
from edgellm.v1 import inference_pb2, inference_pb2_grpc, kv_control_pb2, kv_control_pb2_grpc

from .conftest import MODEL_ID, KuboDaemon, ServerProcess, _require_ipfs

SHARED = " ".join(
    f"Entry {i}: the harbour keeps boats, nets and ropes in sheds." for i in range(20)
)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_held_key_log_pages_and_forgets() -> None:
    log = HeldKeyLog()
    keys = [bytes([i]) * 32 for i in range(5)]
    log.sync(keys[:3])
    page, nxt, more = log.after(0, 2)
    assert page == keys[:2] and nxt == 2 and more
    page, nxt, more = log.after(nxt, 2)
    assert page == keys[2:3] and nxt == 3 and not more
    log.sync([keys[0], keys[2], keys[3], keys[4]])  # keys[1] evicted, two new
    assert log.after(0, 10)[0] == [keys[0], keys[2], keys[3], keys[4]]
    page, nxt, more = log.after(3, 10)
    assert page == keys[3:] and nxt == 5 and not more
    assert log.after(5, 10) == ([], 5, False)


class _Store:
    def __init__(self, held: dict[bytes, list[PartRef]]) -> None:
        self.held = held

    def parts(self, key: bytes) -> list[PartRef]:
        return self.held.get(key, [])


def test_manifest_of_leading_keys_and_cap() -> None:
    keys = [bytes([i]) * 32 for i in range(40)]
    part = PartRef(0, 30, "bafkrei" + "a" * 52, 737280)
    store = _Store({k: [part] for i, k in enumerate(keys) if i != 30})
    spec = ChainSpec("bafk-model", "float32", 16)
    doc, count = manifest_of(store, spec, keys, ["/ip4/127.0.0.1/tcp/1/p2p/x"])
    assert count == 30
    parsed = KVManifest.from_json(doc)
    assert [b.key for b in parsed.blocks] == keys[:30]
    assert parsed.blocks[3] == BlockRef(keys[3], 48, (part,))
    assert parsed.providers == ("/ip4/127.0.0.1/tcp/1/p2p/x",)
    small, n = manifest_of(store, spec, keys, max_bytes=2000)
    assert 0 < n < 30 and len(small) <= 2000
    assert [b.key for b in KVManifest.from_json(small).blocks] == keys[:n]
    assert manifest_of(store, spec, keys[30:31]) == (b"", 0)


@pytest.fixture(scope="module")
def kv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with a real Kubo, shared by the module; the first Generate loads the
    model. Both are stopped by pid afterwards."""
    _require_ipfs()
    daemon = KuboDaemon(tmp_path_factory.mktemp("kvrpc-kubo") / "repo")
    tmp = tmp_path_factory.mktemp("kvrpc")
    server = ServerProcess(
        tmp / "s.sock", tmp / "server.log", ["--ipfs-api", daemon.api, "--device", "cpu"]
    )
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()
        daemon.stop()


def test_prefix_keys_held_keys_and_manifest(kv_server) -> None:
    control = kv_control_pb2_grpc.KVControlStub(kv_server.channel)
    # Before the model is loaded, from the store's tokenizer.
    before = control.PrefixKeys(
        kv_control_pb2.PrefixKeysRequest(model=MODEL_ID, raw_prompt=SHARED), timeout=120
    )
    assert before.block_size == 16 and before.weights_cid
    assert len(before.keys) == before.prompt_tokens // 16 >= 10
    assert all(len(k) == 32 for k in before.keys)
    assert control.HeldKeys(kv_control_pb2.HeldKeysRequest(), timeout=30).keys == []

    generate = inference_pb2.GenerateRequest(
        model=MODEL_ID, raw_prompt=SHARED, sampling=inference_pb2.SamplingParams(max_tokens=2)
    )
    replies = list(
        inference_pb2_grpc.InferenceStub(kv_server.channel).Generate(generate, timeout=300)
    )
    assert replies[-1].usage.prompt_tokens == before.prompt_tokens

    # Loaded: the same keys.
    after = control.PrefixKeys(
        kv_control_pb2.PrefixKeysRequest(model=MODEL_ID, raw_prompt=SHARED), timeout=30
    )
    assert list(after.keys) == list(before.keys)
    # A chat prompt is templated as Generate does: other keys than the raw text.
    chat = control.PrefixKeys(kv_control_pb2.PrefixKeysRequest(model=MODEL_ID, prompt=SHARED))
    assert chat.prompt_tokens > before.prompt_tokens and chat.keys[0] != before.keys[0]

    held = control.HeldKeys(kv_control_pb2.HeldKeysRequest(), timeout=30)
    assert set(held.keys) == set(before.keys) and not held.more
    first = control.HeldKeys(kv_control_pb2.HeldKeysRequest(limit=3), timeout=30)
    assert len(first.keys) == 3 and first.more
    rest = control.HeldKeys(kv_control_pb2.HeldKeysRequest(after_seq=first.next_seq), timeout=30)
    assert list(first.keys) + list(rest.keys) == list(held.keys)
    done = control.HeldKeys(kv_control_pb2.HeldKeysRequest(after_seq=held.next_seq), timeout=30)
    assert list(done.keys) == [] and done.next_seq == held.next_seq

    provider = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWExample"
    unknown = bytes(32)
    reply = control.BlockManifest(
        kv_control_pb2.BlockManifestRequest(
            keys=[*before.keys, unknown], weights_cid=before.weights_cid, providers=[provider]
        ),
        timeout=30,
    )
    assert reply.blocks == len(before.keys)
    manifest = KVManifest.from_json(reply.manifest)
    assert [b.key for b in manifest.blocks] == list(before.keys)
    assert manifest.model_cid == before.weights_cid and manifest.block_size == 16
    assert manifest.providers == (provider,)
    assert all(p.layer_start == 0 for b in manifest.blocks for p in b.parts)

    # Not held, or another model: an empty answer, not an error.
    empty = control.BlockManifest(kv_control_pb2.BlockManifestRequest(keys=[unknown, *before.keys]))
    assert empty.manifest == b"" and empty.blocks == 0
    other = control.BlockManifest(
        kv_control_pb2.BlockManifestRequest(keys=before.keys, weights_cid="bafk-other")
    )
    assert other.blocks == 0


def test_bad_input_is_invalid_argument(kv_server) -> None:
    control = kv_control_pb2_grpc.KVControlStub(kv_server.channel)
    bad = [
        kv_control_pb2.BlockManifestRequest(keys=[bytes(31)]),
        kv_control_pb2.BlockManifestRequest(keys=[bytes(32)] * 4097),
        kv_control_pb2.BlockManifestRequest(keys=[bytes(32)], weights_cid="x" * 300),
        kv_control_pb2.BlockManifestRequest(keys=[bytes(32)], providers=[""]),
    ]
    for req in bad:
        assert _code(lambda r=req: control.BlockManifest(r, timeout=30)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    no_input = kv_control_pb2.PrefixKeysRequest(model=MODEL_ID)
    assert _code(lambda: control.PrefixKeys(no_input)) == grpc.StatusCode.INVALID_ARGUMENT
    blank = kv_control_pb2.PrefixKeysRequest(model=MODEL_ID, prompt="  ")
    assert _code(lambda: control.PrefixKeys(blank)) == grpc.StatusCode.INVALID_ARGUMENT
    unknown = kv_control_pb2.PrefixKeysRequest(model="no-such-model", prompt="hi")
    assert _code(lambda: control.PrefixKeys(unknown)) == grpc.StatusCode.NOT_FOUND
