"""Prefill/decode disaggregation on real Ray: a head and two peers' Ray nodes, each peer
with its own Kubo daemon (the cluster manager hands its API to the peer's stage actors).
Greedy output equals transformers generate; D took the prompt's whole blocks, their bytes
straight from P's object store; once P is gone they cannot be taken; P lost before its
logits costs a warning, not the answer."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from edgellm.cluster import procs
from edgellm.cluster.disaggregated import direct
from edgellm.cluster.disaggregated.worker import DIRECT_MAX_BYTES
from edgellm.cluster.manager import ClusterManager
from edgellm.cluster.node import MARKER_ENV
from edgellm.cluster.plan import Plan, PlanStage, StageRole
from edgellm.cluster.token import RayToken
from edgellm.engine.torch.stage import LayerRange
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import KVError
from edgellm.models.store import ModelStore
from tests.python.conftest import KuboDaemon, _require_ipfs

pytestmark = pytest.mark.ray_cluster

MODEL_ID = "smollm2-135m"
SESSION = "pd-session"
MAX_NEW = 10
PROMPT = " ".join(
    f"Line {i}: the orchard keeper counted {i * 7} apples and {i + 2} pears before the rain."
    for i in range(14)
)


def _request(rid: str) -> GenerationRequest:
    return GenerationRequest(rid, prompt=PROMPT, sampling=SamplingParams(max_tokens=MAX_NEW))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, isolated_network: None
) -> Iterator[ClusterManager]:
    _require_ipfs()
    work_dir = tmp_path_factory.mktemp("ray")
    kubos: list[KuboDaemon] = []
    managers: list[ClusterManager] = []
    try:
        for name in ("kubo-p", "kubo-d"):
            kubos.append(KuboDaemon(tmp_path_factory.mktemp(name) / "repo"))
        token = RayToken.generate()
        head = ClusterManager(work_dir, models_dir)
        managers.append(head)
        address = head.start_head(SESSION, "127.0.0.1", token.value).node.address
        for i, kubo in enumerate(kubos):
            peer = ClusterManager(work_dir / f"p{i}", models_dir, ipfs_api=kubo.api)
            managers.append(peer)
            peer.join(SESSION, address, token.value, f"peer:p{i}", "127.0.0.1")
        yield head
    finally:
        for manager in reversed(managers):
            manager.close()
        for kubo in kubos:
            kubo.stop()
        assert procs.marked(MARKER_ENV, str(work_dir)) == []


@pytest.fixture(scope="module")
def engine(cluster: ClusterManager, models_dir: Path, store_dir: Path):
    cid = ModelStore(models_dir).manifest(MODEL_ID).weights_cid
    plan = Plan(
        SESSION,
        (
            PlanStage("peer:p0", LayerRange(0, 30), cid, StageRole.PREFILL),
            PlanStage("peer:p1", LayerRange(0, 30), cid, StageRole.DECODE),
        ),
    )
    engine = cluster.engine(plan, MODEL_ID, store_dir, 30)
    return engine


@pytest.fixture(scope="module")
def reference(engine, store_dir: Path) -> list[int]:
    ids = torch.tensor([engine.prepare(_request("r")).prompt_ids])
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
    return out[0, ids.shape[1] :].tolist()


def _store_mapped(pid: int) -> int:
    """Bytes of its node's object store (Ray's plasma file) that process `pid` has mapped."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = "plasma" in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def test_both_peers_map_their_object_stores_at_load(engine) -> None:
    """Before any request (this test runs first): where the handoff's bytes will be put
    and read is mapped into each stage's process, so that neither faults it in on the
    request's path."""
    for pid in engine.pipeline.pids:
        assert _store_mapped(pid) >= DIRECT_MAX_BYTES


def test_prefill_and_decode_on_two_peers_match_generate(engine, reference, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="edgellm.cluster.disaggregated.driver"):
        chunks = list(engine.generate(_request("a")))
    assert [t for c in chunks for t in c.token_ids] == reference
    usage, timings = chunks[-1].usage, chunks[-1].timings
    assert usage.prompt_tokens > 10 * 16
    blocks = usage.prompt_tokens // 16
    assert usage.cached_prompt_tokens == blocks * 16
    assert timings.kv_store_ms > 0 and timings.kv_fetch_ms > 0
    # Every block's bytes went P -> D through Ray's object stores, none over bitswap
    # (one part a block: the embedded model's 30 layers fit one part).
    assert f"{blocks} block parts handed over directly)" in caplog.text


def _buffers(actor) -> tuple[int, int, int]:
    """The prefill actor's encode buffers: (taken from the pool, new memory, free)."""
    return ray.get(
        actor.__ray_call__.remote(
            lambda self: (self.kv.buffers.reused, self.kv.buffers.fresh, self.kv.buffers.free)
        )
    )


def test_the_prefill_peer_encodes_into_buffers_kept_from_its_load(engine, reference) -> None:
    """Filled at load (DisaggregatedRunner.load), taken by the handoff, given back once
    the blocks are in P's Kubo, taken again by the next handoff: no new memory."""
    prefill = engine.pipeline.prefill
    reused, fresh, free = _buffers(prefill)
    assert free > 0
    chunks = list(engine.generate(_request("pool")))
    assert [t for c in chunks for t in c.token_ids] == reference
    blocks = chunks[-1].usage.prompt_tokens // 16  # one part a block
    deadline = time.monotonic() + 30
    while _buffers(prefill)[2] < free and time.monotonic() < deadline:
        time.sleep(0.1)  # polls a condition: P stores the blocks in a thread
    assert _buffers(prefill) == (reused + blocks, fresh, free)


def test_blocks_whose_prefill_peer_is_gone_do_not_arrive(engine) -> None:
    """The handed-over bytes live in P's object store, owned by P's actor: once it is
    gone, taking them fails with a KVError (D then computes, as PeerKV.load does)."""
    prefill = engine.pipeline.prefill
    ids = torch.tensor([engine.prepare(_request("h")).prompt_ids])
    ray.get(prefill.open.remote("h", ids.shape[1] + 1))
    ray.get(prefill.prefill.remote("h", ids))
    handoff = ray.get(prefill.handoff.remote("h"))
    cids = [cid for chunk in handoff.blocks for cid in chunk[0]]
    assert len(cids) == ids.shape[1] // 16
    ray.kill(prefill)
    pid = engine.pipeline.pids[0]
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # polls a condition: the kill is asynchronous
    assert not Path(f"/proc/{pid}").exists()
    take = direct.getters(handoff.blocks, 10.0)
    with pytest.raises(KVError, match="did not arrive"):
        take[cids[0]]()


def test_prefill_peer_lost_costs_a_warning(engine, reference, caplog) -> None:
    ray.kill(engine.pipeline.prefill)
    with caplog.at_level(logging.WARNING):
        chunks = list(engine.generate(_request("b")))
    assert [t for c in chunks for t in c.token_ids] == reference
    assert chunks[-1].usage.cached_prompt_tokens == 0
    assert any("prefill peer" in r.getMessage() for r in caplog.records)
