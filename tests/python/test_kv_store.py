"""The block store against a real Kubo: pinning, LRU eviction, the persisted index, and a
stock Kubo fetching an edgellm KV block by CID through the `ipfs` CLI."""

from __future__ import annotations

import http.server
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from edgellm.engine.torch.stage import LayerRange, Stage
from edgellm.errors import BlockRefused, KuboError
from edgellm.kv import store as kvstore
from edgellm.kv.handoff import StageKV, fetch_into, store_session
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.keys import chain
from edgellm.kv.manifest import KVManifest
from edgellm.kv.store import INDEX_NAME, KVStore
from edgellm.models.manifest import Manifest


def _pinned(client: KuboClient, cid: str) -> bool:
    try:
        client._call("pin/ls", params={"arg": cid, "type": "recursive"})
        return True
    except KuboError:
        return False


def test_lru_eviction_unpins_and_index_persists(start_kubo, tmp_path: Path) -> None:
    daemon = start_kubo()
    client = KuboClient(daemon.api)
    store = KVStore(client, tmp_path / "kv", max_bytes=3 * 1000)
    keys = [bytes([i]) * 32 for i in range(5)]
    cids = []
    for key in keys[:3]:
        cids.append(store.put(key, 0, 30, os.urandom(1000)).cid)
        assert store.has(key, 0, 30)
    store.touch([(keys[0], 0, 30)])  # block 0 is now the most recently used
    for key in keys[3:]:
        cids.append(store.put(key, 0, 30, os.urandom(1000)).cid)
    # Over the cap: the two least recently used (blocks 1 and 2) went, unpinned.
    assert [store.has(k, 0, 30) for k in keys] == [True, False, False, True, True]
    assert [_pinned(client, c) for c in cids] == [True, False, False, True, True]
    assert store.stored_bytes == 3000
    assert store.keys() == [keys[0], keys[3], keys[4]]
    assert [p.cid for p in store.entries()] == [cids[0], cids[3], cids[4]]
    doc = json.loads((tmp_path / "kv" / INDEX_NAME).read_text())
    assert doc["format"] == "edgellm-kv-index/1" and len(doc["parts"]) == 3
    again = KVStore(client, tmp_path / "kv", max_bytes=3 * 1000)
    assert [again.has(k, 0, 30) for k in keys] == [True, False, False, True, True]
    client.repo_gc()
    with pytest.raises(KuboError):
        client.block_get(cids[1], timeout_s=0.5)  # unpinned and collected: gone
    assert len(client.block_get(cids[0], timeout_s=5)) == 1000


@pytest.mark.parametrize("batch_bytes", [64 << 20, 10_000], ids=["one-request", "batches"])
def test_put_many_puts_pinned_blocks_in_order(
    start_kubo, tmp_path: Path, monkeypatch, batch_bytes: int
) -> None:
    # Many parts go to Kubo in one block/put per batch: the CIDs come back in the parts'
    # order, the same CIDs one put per block gives, every one pinned and indexed.
    monkeypatch.setattr(kvstore, "PUT_BATCH_BYTES", batch_bytes)
    daemon = start_kubo()
    client = KuboClient(daemon.api)
    store = KVStore(client, tmp_path / "kv", max_bytes=1 << 30)
    datas = [os.urandom(n) for n in (700_000, 1, 5_000, 700_000)]
    parts = [(bytes([i]) * 32, 0, 30, data) for i, data in enumerate(datas)]
    refs = store.put_many(parts)
    assert [r.size for r in refs] == [len(d) for d in datas]
    assert [r.cid for r in refs] == [KuboClient(daemon.api).block_put(d) for d in datas]
    assert all(_pinned(client, r.cid) for r in refs)
    assert [store.has(k, 0, 30) for k, *_ in parts] == [True] * 4
    assert [client.block_get(r.cid, timeout_s=5) for r in refs] == datas
    assert store.put_many([]) == [] and client.block_put_many([]) == []


def test_unreadable_index_is_ignored(tmp_path: Path, caplog) -> None:
    (tmp_path / INDEX_NAME).write_text("{broken")
    store = KVStore(KuboClient("http://127.0.0.1:9"), tmp_path, 1 << 20)
    assert len(store) == 0
    assert "ignoring unreadable index" in caplog.text


def test_client_errors_are_ipfs_errors() -> None:
    client = KuboClient("http://127.0.0.1:9", timeout_s=2)
    for call in (client.id, lambda: client.block_put(b"x"), lambda: client.block_get("x", 1)):
        with pytest.raises(KuboError):
            call()


def test_block_get_through_the_gateway(start_kubo) -> None:
    # Blocks are read through Kubo's trustless gateway when the client has one.
    a, b = start_kubo(), start_kubo()
    assert b.gateway
    b.connect(a)
    data = os.urandom(5000)
    cid = KuboClient(a.api).block_put(data)
    client = KuboClient(b.api, gateway=b.gateway)
    assert client.block_get(cid, timeout_s=10) == data  # over bitswap, then local
    assert client.block_get(cid, timeout_s=10) == data
    with pytest.raises(KuboError, match="not a CID"):
        client.block_get("../api/v0/shutdown", timeout_s=1)
    gone = KuboClient(a.api).block_put(os.urandom(10))
    KuboClient(a.api).pin_rm(gone)
    KuboClient(a.api).repo_gc()
    with pytest.raises(KuboError):
        client.block_get(gone, timeout_s=1)  # nowhere: times out, does not hang
    dead = KuboClient(b.api, gateway="http://127.0.0.1:9")
    with pytest.raises(KuboError):
        dead.block_get(cid, timeout_s=1)


def test_kubo_over_unix_sockets(start_kubo, tmp_path: Path) -> None:
    # How the node runs its own Kubo: API and gateway on sockets in the private repository.
    daemon = start_kubo(unix=True)
    assert daemon.api.startswith("unix:/") and daemon.gateway.startswith("unix:/")
    client = KuboClient(daemon.api, gateway=daemon.gateway)
    assert client.id()["ID"] == daemon.peer_id
    store = KVStore(client, tmp_path / "kv", 1 << 20)
    data = os.urandom(2000)
    cid = store.put(bytes(32), 0, 30, data).cid
    assert store.fetch(cid) == data  # through the gateway's socket
    assert KVStore(KuboClient(f"/unix{daemon.api[5:]}"), tmp_path / "m", 1 << 20).fetch(cid) == data


def _kv_block(model_cid: str, index: int) -> tuple[bytes, bytes]:
    """(key, bytes) of a small, valid KV block of `model_cid`."""
    from edgellm.kv import block as blockfmt
    from edgellm.kv.block import BlockMeta

    key = bytes([index + 1]) * 32
    meta = BlockMeta(model_cid, 0, 2, "float32", 4, 4 * index, (1, 2, 3, 4), key, bytes(32))
    layers = [(torch.randn(2, 4, 8), torch.randn(2, 4, 8)) for _ in range(2)]
    return key, blockfmt.encode(meta, layers)


def test_index_is_reconciled_with_kubos_pins(start_kubo, tmp_path: Path) -> None:
    daemon = start_kubo()
    client = KuboClient(daemon.api)
    store = KVStore(client, tmp_path / "kv", 1 << 20)
    blocks = [_kv_block("bafkreimine", i) for i in range(3)]
    refs = [store.put(key, 0, 2, data) for key, data in blocks]
    theirs = client.block_put(_kv_block("bafkreiother", 7)[1])  # another model's block
    client.block_put(b"not a KV block")
    # A crash rolled the index back to nothing, and one block was unpinned meanwhile.
    (tmp_path / "kv" / INDEX_NAME).write_text('{"format":"edgellm-kv-index/1","parts":[]}')
    client.pin_rm(refs[2].cid)
    again = KVStore(client, tmp_path / "kv", 1 << 20)
    assert len(again) == 0
    assert again.reconcile("bafkreimine") == (0, 2)
    assert [again.has(key, 0, 2) for key, _ in blocks] == [True, True, False]
    assert theirs not in {p.cid for p in again.entries()}
    # An entry whose block is no longer pinned is forgotten.
    client.pin_rm(refs[1].cid)
    assert KVStore(client, tmp_path / "kv", 1 << 20).reconcile("bafkreimine") == (1, 0)


class _ImpostorGateway(http.server.BaseHTTPRequestHandler):
    """A fake, named as such: another local user's process answering on Kubo's gateway
    port with forged bytes (a real Kubo never serves bytes that do not match a CID)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"forged K/V " * 100
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.ipld.raw")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_fetched_bytes_must_match_their_cid(start_kubo, tmp_path: Path) -> None:
    daemon = start_kubo()
    real = KVStore(KuboClient(daemon.api, gateway=daemon.gateway), tmp_path / "a", 1 << 20)
    data = os.urandom(3000)
    cid = real.put(bytes(32), 0, 30, data).cid
    assert real.fetch(cid) == data
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImpostorGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = f"http://127.0.0.1:{server.server_address[1]}"
        forged = KVStore(KuboClient(daemon.api, gateway=gateway), tmp_path / "b", 1 << 20)
        with pytest.raises(BlockRefused, match="do not match that CID"):
            forged.fetch(cid)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stage(store_dir: Path) -> Stage:
    return Stage(store_dir, LayerRange(0, 30))


def test_stock_kubo_fetches_a_block_by_cid(
    start_kubo, stage: Stage, store_dir: Path, tmp_path: Path
) -> None:
    """A P/D handoff by hand: prefill on peer P stores its blocks; a stock Kubo connected
    to P's fetches one by CID with the `ipfs` CLI; the bytes are the documented format;
    and peer D, given the manifest, fetches them into a fresh session."""
    edgellm_kubo, stock = start_kubo(), start_kubo()
    stock.connect(edgellm_kubo)
    model_cid = Manifest.read(store_dir).weights_cid
    tokens = list(range(1000, 1040))  # 2 full blocks of 16 and 8 tokens more
    session = stage.session(64)
    with torch.inference_mode():
        session.forward(torch.tensor([tokens]))
    store = KVStore(KuboClient(edgellm_kubo.api), tmp_path / "p", 1 << 30)
    keys = chain(StageKV.of(stage.kv_layout, model_cid, 16).chain, tokens)
    refs = store_session(session, store, model_cid, 16, tokens, keys)
    assert [r.position for r in refs] == [0, 16]
    cid = refs[1].parts[0].cid

    data = stock.cli("block", "get", cid).stdout
    path = tmp_path / "block.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        k3 = f.get_tensor("k.3")
    assert meta["format"] == "edgellm-kv/1"
    assert meta["model_cid"] == model_cid
    assert (meta["layer_start"], meta["layer_end"], meta["dtype"]) == ("0", "30", "float32")
    assert (meta["block_size"], meta["position"]) == ("16", "16")
    assert json.loads(meta["token_ids"]) == tokens[16:32]
    assert (meta["key"], meta["parent"]) == (keys[1].hex(), keys[0].hex())
    assert k3.shape == (3, 16, 64)
    assert torch.equal(k3, session.cache.layers[3].keys[0, :, 16:32])

    # Peer D, with the stock daemon as its Kubo, continues from the two fetched blocks;
    # its logits match a full prefill's.
    manifest = KVManifest(model_cid, "float32", 16, tuple(refs))
    d_store = KVStore(KuboClient(stock.api), tmp_path / "d", 1 << 30)
    fresh = stage.session(64)
    with ThreadPoolExecutor(4) as pool, torch.inference_mode():
        fetched = fetch_into(fresh, d_store, manifest, model_cid, 16, tokens, keys, 2, pool)
        assert len(fetched.blocks) == 2 and fresh.position == 32
        a = fresh.forward(torch.tensor([tokens[32:]]))
        ref = stage.session(64)
        c = ref.forward(torch.tensor([tokens]))
    assert torch.allclose(a, c, rtol=1e-4, atol=1e-4)


def test_layer_groups_and_partial_stages(
    start_kubo, stage: Stage, store_dir: Path, tmp_path
) -> None:
    """Blocks too big for one IPFS block are split by layer group (32 tokens x 30 layers
    is 1.5 MB); a stage serving layers [0, 13) uses the parts that cover its layers."""
    daemon = start_kubo()
    model_cid = Manifest.read(store_dir).weights_cid
    tokens = list(range(2000, 2070))  # 2 blocks of 32, 6 tokens more
    session = stage.session(80)
    with torch.inference_mode():
        session.forward(torch.tensor([tokens]))
    store = KVStore(KuboClient(daemon.api), tmp_path / "kv", 1 << 30)
    keys = chain(StageKV.of(stage.kv_layout, model_cid, 32).chain, tokens)
    refs = store_session(session, store, model_cid, 32, tokens, keys)
    groups = [(p.layer_start, p.layer_end) for p in refs[0].parts]
    assert groups == [(0, 15), (15, 30)]
    assert all(0 < p.size <= 1_000_000 for r in refs for p in r.parts)
    manifest = KVManifest(model_cid, "float32", 32, tuple(refs))

    head = Stage(store_dir, LayerRange(0, 13))
    fresh = head.session(80)
    other = KVStore(KuboClient(daemon.api), tmp_path / "other", 1 << 30)
    with ThreadPoolExecutor(4) as pool, torch.inference_mode():
        fetched = fetch_into(fresh, other, manifest, model_cid, 32, tokens, keys, 2, pool)
        assert len(fetched.blocks) == 2 and fresh.position == 64
        assert [(s.part.layer_start, s.part.layer_end) for s, _ in fetched.remote] == [(0, 15)] * 2
        a = fresh.forward(torch.tensor([tokens[64:]]))
        b = head.session(80).forward(torch.tensor([tokens]))
    assert torch.allclose(a[:, -1], b[:, -1], rtol=1e-4, atol=1e-4)


def test_two_processes_share_one_store(start_kubo, tmp_path: Path) -> None:
    """A backend's store and a stage actor's on the same directory (two instances here,
    as two processes would hold): each sees the other's parts, and eviction is one cap."""
    daemon = start_kubo()
    backend = KVStore(KuboClient(daemon.api), tmp_path / "kv", max_bytes=3 * 1000)
    stage = KVStore(KuboClient(daemon.api), tmp_path / "kv", max_bytes=3 * 1000)
    keys = [bytes([i]) * 32 for i in range(4)]
    stage.put(keys[0], 0, 15, os.urandom(1000))
    backend.put(keys[1], 0, 30, os.urandom(1000))
    stage.put(keys[2], 15, 30, os.urandom(1000))
    assert backend.keys() == keys[:3] and stage.keys() == keys[:3]
    assert backend.has(keys[0], 0, 15) and stage.has(keys[1], 0, 30)
    backend.put(keys[3], 0, 30, os.urandom(1000))  # over the one cap: the oldest goes
    assert stage.keys() == keys[1:] and backend.keys() == keys[1:]
    assert stage.stored_bytes == 3000
