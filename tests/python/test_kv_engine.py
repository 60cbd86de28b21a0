"""The prefix cache against real Kubo daemons: answers equal transformers generate token
for token, whether the prefix is computed, taken from this peer's blocks, fetched from
another peer over bitswap, or partly refused and recomputed."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.torch.stage import StageSession
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.kv import block as blockfmt
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.manifest import BlockRef, KVManifest, PartRef
from edgellm.kv.prefix import PrefixCache
from edgellm.kv.store import KVStore
from edgellm.models.cid import raw_cid
from edgellm.models.manifest import Manifest

BLOCK = 16
MAX_NEW = 10
SHARED = " ".join(
    f"Note {i}: the lighthouse keeper logs the wind, the tide and every passing ship in a "
    f"leather book that his grandmother started."
    for i in range(12)
)
FIRST = SHARED + "\n\nWhat does the keeper log?"
SECOND = SHARED + "\n\nWho started the book?"


def _request(rid: str, text: str, manifest: bytes = b"", no_cache: bool = False):
    return GenerationRequest(
        rid,
        prompt=text,
        sampling=SamplingParams(max_tokens=MAX_NEW),
        no_prefix_cache=no_cache,
        kv_manifest=manifest,
    )


def _run(engine: TorchEngine, request: GenerationRequest):
    chunks = list(engine.generate(request))
    return [t for c in chunks for t in c.token_ids], chunks[-1]


def _cache(daemon, directory: Path, model_cid: str, **kw) -> PrefixCache:
    store = KVStore(
        KuboClient(daemon.api), directory, kw.get("cap", 1 << 30), kw.get("timeout", 5.0)
    )
    return PrefixCache(store, model_cid, BLOCK)


@pytest.fixture(scope="module")
def model_cid(store_dir: Path) -> str:
    return Manifest.read(store_dir).weights_cid


@pytest.fixture(scope="module")
def engine(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir))


@pytest.fixture(scope="module")
def reference(store_dir: Path, engine: TorchEngine) -> dict[str, list[int]]:
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    out = {}
    for text in (FIRST, SECOND):
        ids = torch.tensor([engine.prepare(_request("r", text)).prompt_ids])
        with torch.inference_mode():
            gen = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
            )
        out[text] = gen[0, ids.shape[1] :].tolist()
    return out


@pytest.fixture(scope="module")
def holder(engine, kubo_pair, model_cid, tmp_path_factory, reference):
    """Peer A's cache after serving FIRST: it holds FIRST's blocks."""
    a, _ = kubo_pair
    engine.prefix_cache = _cache(a, tmp_path_factory.mktemp("kv-a"), model_cid)
    tokens, last = _run(engine, _request("first", FIRST))
    assert tokens == reference[FIRST]
    assert last.usage.cached_prompt_tokens == 0
    assert last.timings.kv_store_ms > 0
    prompt = engine.prepare(_request("x", FIRST)).prompt_ids
    assert len(engine.prefix_cache.store) == len(prompt) // BLOCK  # one part per block
    return engine.prefix_cache


@pytest.fixture
def prefill_inputs(monkeypatch) -> list[int]:
    """Lengths of every first-stage forward, to prove what was computed."""
    seen: list[int] = []
    original = StageSession.forward

    def spy(self, inputs, **kwargs):
        if self.stage.is_first:
            seen.append(inputs.shape[1])
        return original(self, inputs, **kwargs)

    monkeypatch.setattr(StageSession, "forward", spy)
    return seen


def _shared_blocks(engine) -> int:
    a = engine.prepare(_request("x", FIRST)).prompt_ids
    b = engine.prepare(_request("x", SECOND)).prompt_ids
    n = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return n // BLOCK


def test_second_request_is_served_from_cached_blocks(
    engine, holder, reference, prefill_inputs
) -> None:
    engine.prefix_cache = holder
    tokens, last = _run(engine, _request("second", SECOND))
    assert tokens == reference[SECOND]
    shared = _shared_blocks(engine)
    assert shared * BLOCK > 200
    assert last.usage.cached_prompt_tokens == shared * BLOCK
    assert last.timings.kv_fetch_ms > 0
    prompt_len = last.usage.prompt_tokens
    # Only the rest of the prompt, plus one row: the spot check's recomputed position.
    assert prefill_inputs[0] == prompt_len - shared * BLOCK + 1


def test_no_prefix_cache_computes_everything(engine, holder, reference, prefill_inputs) -> None:
    engine.prefix_cache = holder
    tokens, last = _run(engine, _request("full", SECOND, no_cache=True))
    assert tokens == reference[SECOND]
    assert last.usage.cached_prompt_tokens == 0
    assert prefill_inputs[0] == last.usage.prompt_tokens


def _manifest(engine, holder, kubo_pair) -> KVManifest:
    a, _ = kubo_pair
    prompt = engine.prepare(_request("x", FIRST)).prompt_ids
    stage = engine.pipeline.stages[0]
    return holder.manifest_for(stage.kv_layout, prompt, [f"{a.addrs[0]}/p2p/{a.peer_id}"])


def test_other_peer_fetches_blocks_over_bitswap(
    engine, holder, kubo_pair, model_cid, tmp_path, reference, prefill_inputs
) -> None:
    _, b = kubo_pair
    manifest = _manifest(engine, holder, kubo_pair)
    engine.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)
    tokens, last = _run(engine, _request("b", SECOND, manifest.to_json()))
    shared = _shared_blocks(engine)
    assert tokens == reference[SECOND]
    assert last.usage.cached_prompt_tokens == shared * BLOCK
    assert prefill_inputs[0] == last.usage.prompt_tokens - shared * BLOCK + 1
    # B pinned what it fetched and stored the rest of its prompt: it now serves them too.
    assert all(engine.prefix_cache.store.has(blk.key, 0, 30) for blk in manifest.blocks[:shared])


def _replace(manifest: KVManifest, index: int, cid: str) -> bytes:
    blocks = list(manifest.blocks)
    old = blocks[index]
    part = old.parts[0]
    blocks[index] = BlockRef(old.key, old.position, (PartRef(0, part.layer_end, cid),))
    return KVManifest(
        manifest.model_cid, manifest.dtype, BLOCK, tuple(blocks), manifest.providers
    ).to_json()


def _block_bytes(engine, manifest: KVManifest, index: int, **changes) -> bytes:
    """An encoded block for position `index` with some field or shape changed."""
    prompt = engine.prepare(_request("x", FIRST)).prompt_ids
    ref = manifest.blocks[index]
    meta = blockfmt.BlockMeta(
        model_cid=changes.get("model_cid", manifest.model_cid),
        layer_start=0,
        layer_end=30,
        dtype="float32",
        block_size=BLOCK,
        position=index * BLOCK,
        token_ids=changes.get("tokens", tuple(prompt[index * BLOCK : (index + 1) * BLOCK])),
        key=ref.key,
        parent=manifest.blocks[index - 1].key if index else bytes(32),
    )
    shape = changes.get("shape", (3, BLOCK, 64))
    fill = changes.get("fill", 0.0)
    layers = [(torch.full(shape, fill), torch.full(shape, fill)) for _ in range(30)]
    return blockfmt.encode(meta, layers)


BAD_BLOCK = 4  # which block of the manifest is spoiled


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage", "not safetensors"),
        ("other_model", "block of another model"),
        ("wrong_tokens", "token ids differ"),
        ("wrong_shape", "shape of k.0"),
        ("nan", "non-finite"),
        ("trailing", "trailing bytes"),
        ("missing", "not fetched"),
        ("bad_manifest", "ignoring the request's manifest"),
    ],
)
def test_bad_blocks_are_refused_and_recomputed(
    engine, holder, kubo_pair, model_cid, tmp_path, reference, caplog, case, reason
) -> None:
    a, b = kubo_pair
    manifest = _manifest(engine, holder, kubo_pair)
    writer = KuboClient(a.api)
    if case == "garbage":
        data = os.urandom(4000)
    elif case == "other_model":
        data = _block_bytes(engine, manifest, BAD_BLOCK, model_cid="bafkreiothermodel")
    elif case == "wrong_tokens":
        data = _block_bytes(engine, manifest, BAD_BLOCK, tokens=(1,) * BLOCK)
    elif case == "wrong_shape":
        data = _block_bytes(engine, manifest, BAD_BLOCK, shape=(3, BLOCK, 32))
    elif case == "nan":
        data = _block_bytes(engine, manifest, BAD_BLOCK, fill=float("nan"))
    elif case == "trailing":
        real = manifest.blocks[BAD_BLOCK].parts[0].cid
        data = writer.block_get(real, timeout_s=5) + b"\0" * 8
    else:
        data = None
    if case == "missing":
        # A valid CID of bytes nobody has.
        payload = _replace(manifest, BAD_BLOCK, raw_cid(os.urandom(64)))
    elif case == "bad_manifest":
        payload = b"{not json"
    else:
        payload = _replace(manifest, BAD_BLOCK, writer.block_put(data))
    engine.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid, timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        tokens, last = _run(engine, _request(case, SECOND, payload))
    assert tokens == reference[SECOND]
    expected = 0 if case == "bad_manifest" else BAD_BLOCK * BLOCK
    assert last.usage.cached_prompt_tokens == expected
    assert reason in caplog.text


def test_kubo_stopped_mid_request(
    engine, holder, kubo_pair, model_cid, start_kubo, tmp_path, reference, caplog
) -> None:
    a, _ = kubo_pair
    c = start_kubo()
    c.connect(a)
    manifest = _manifest(engine, holder, kubo_pair)
    cache = _cache(c, tmp_path / "kv-c", model_cid, timeout=2.0)
    victim = manifest.blocks[BAD_BLOCK].parts[0].cid
    earlier = {blk.parts[0].cid for blk in manifest.blocks[:BAD_BLOCK]}
    done: set[str] = set()
    real_fetch = cache.store.fetch

    def fetch(cid: str) -> bytes:
        if cid == victim:
            import time

            deadline = time.monotonic() + 20
            while not earlier <= done and time.monotonic() < deadline:
                time.sleep(0.01)
            c.kill()  # Kubo dies while the request is fetching its blocks
        data = real_fetch(cid)
        done.add(cid)
        return data

    cache.store.fetch = fetch
    engine.prefix_cache = cache
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        tokens, last = _run(engine, _request("killed", SECOND, manifest.to_json()))
    assert tokens == reference[SECOND]
    assert last.usage.cached_prompt_tokens == BAD_BLOCK * BLOCK
    assert "not fetched" in caplog.text
    assert "storing the prompt's blocks failed" in caplog.text


def test_unreachable_kubo_computes_and_warns(
    engine, model_cid, tmp_path, reference, caplog
) -> None:
    store = KVStore(KuboClient("http://127.0.0.1:9"), tmp_path / "kv", 1 << 30, 1.0)
    engine.prefix_cache = PrefixCache(store, model_cid, BLOCK)
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        tokens, last = _run(engine, _request("down", FIRST))
    assert tokens == reference[FIRST]
    assert last.usage.cached_prompt_tokens == 0
    assert "storing the prompt's blocks failed" in caplog.text


def _forged(engine, holder, kubo_pair) -> tuple[KVManifest, bytes]:
    """The manifest of FIRST's blocks, every block replaced by well-formed, finite K/V
    that are not the model's (zeros): only the spot check can tell."""
    a, _ = kubo_pair
    manifest = _manifest(engine, holder, kubo_pair)
    writer = KuboClient(a.api)
    blocks = []
    for index, old in enumerate(manifest.blocks):
        cid = writer.block_put(_block_bytes(engine, manifest, index, fill=0.25))
        blocks.append(BlockRef(old.key, old.position, (PartRef(0, 30, cid),)))
    forged = KVManifest(manifest.model_cid, "float32", BLOCK, tuple(blocks), manifest.providers)
    return forged, forged.to_json()


def test_forged_blocks_fail_the_spot_check_and_the_holder_is_dropped(
    engine, holder, kubo_pair, model_cid, tmp_path, reference, caplog, prefill_inputs
) -> None:
    a, _ = kubo_pair
    forged, payload = _forged(engine, holder, kubo_pair)
    _, b = kubo_pair
    engine.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        chunks = list(engine.generate(_request("forged", SECOND, payload)))
    tokens, last = [t for c in chunks for t in c.token_ids], chunks[-1]
    assert tokens == reference[SECOND]
    assert last.usage.cached_prompt_tokens == 0
    # The node is told, with the first token, whom to stop asking.
    assert [c.dropped_kv_holders for c in chunks] == [(a.peer_id,)] + [()] * (len(chunks) - 1)
    # The rest of the prompt with the spot check's position, then the whole prompt.
    rest = last.usage.prompt_tokens - _shared_blocks(engine) * BLOCK
    assert prefill_inputs[:2] == [rest + 1, last.usage.prompt_tokens]
    assert "spot check of cached block" in caplog.text
    assert a.peer_id in engine.prefix_cache.dropped
    # Nothing forged was pinned or indexed, so it is not announced either (the blocks B
    # computed itself are).
    forged_cids = {part.cid for blk in forged.blocks for part in blk.parts}
    held = {part.cid for part in engine.prefix_cache.store.entries()}
    assert held and not held & forged_cids
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        tokens, last = _run(engine, _request("again", SECOND, payload))
    assert tokens == reference[SECOND]
    assert "dropped after a failed spot check" in caplog.text


def test_fetched_blocks_are_adopted_only_after_a_harmless_request(
    engine, holder, kubo_pair, model_cid, tmp_path, reference
) -> None:
    _, b = kubo_pair
    manifest = _manifest(engine, holder, kubo_pair)
    engine.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)
    stream = engine.generate(_request("left", SECOND, manifest.to_json()))
    next(stream)  # the prompt was prefilled from the fetched blocks, then the client left
    stream.close()
    for thread in threading.enumerate():
        if thread.name == "kv-store":
            thread.join(30)
    assert not any(engine.prefix_cache.store.has(blk.key, 0, 30) for blk in manifest.blocks)
    tokens, _ = _run(engine, _request("whole", SECOND, manifest.to_json()))
    assert tokens == reference[SECOND]
    assert engine.prefix_cache.store.has(manifest.blocks[0].key, 0, 30)
