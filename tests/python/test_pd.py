"""Prefill/decode disaggregation without Ray: two in-process stage actors, each with its
own real Kubo daemon (not connected beforehand: the decode side connects through the
manifest's providers). Greedy output equals transformers generate token for token whether
the decode peer takes every full block from the prefill peer, refuses one and recomputes
from there, or has no IPFS at all; the prefill peer's loss costs only a warning. A decode
peer lost mid-generation is replaced (as the node's failover does: a new runner on the
same cluster session, the request resumed with the tokens so far) by one that fetches the
prompt's blocks and computes only the generated tokens on top, or everything, with a
warning, when the blocks cannot be had. Forged blocks fail the decode peer's spot check:
it computes the prompt, keeps none of them and names the prefill peer."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.cluster.actor import StageActor
from edgellm.cluster.disaggregated import worker
from edgellm.cluster.disaggregated.driver import DisaggregatedRunner, LocalCalls
from edgellm.cluster.disaggregated.handoffs import RecentHandoffs
from edgellm.cluster.disaggregated.messages import Handoff
from edgellm.cluster.disaggregated.worker import PeerKV
from edgellm.cluster.plan import Plan, PlanStage, StageRole
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.torch.stage import LayerRange, Stage, StageSession
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import ClusterError
from edgellm.kv import handoff as kvhandoff
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.store import KVStore
from edgellm.models.manifest import Manifest
from edgellm.server.messages import generate_response
from tests.python.forged import forge_parts

BLOCK = 16
MAX_NEW = 12
PROMPT = (
    " ".join(
        f"Entry {i}: the ferry left the harbour at dawn with {i + 3} passengers, two crates of "
        f"oranges and a bicycle that belonged to the harbour master's niece."
        for i in range(10)
    )
    + "\n\nHow many passengers did the ferry carry on entry 4?"
)


@pytest.fixture(scope="module")
def model_cid(store_dir: Path) -> str:
    return Manifest.read(store_dir).weights_cid


@pytest.fixture(scope="module")
def stage(store_dir: Path) -> Stage:
    """Every layer, shared by both actors (sessions are separate)."""
    return Stage(store_dir)


@pytest.fixture(scope="module")
def kubos(tmp_path_factory: pytest.TempPathFactory):
    from tests.python.conftest import KuboDaemon, _require_ipfs

    _require_ipfs()
    started = []
    try:
        for name in ("kubo-p", "kubo-d"):
            started.append(KuboDaemon(tmp_path_factory.mktemp(name) / "repo"))
        yield tuple(started)
    finally:
        for daemon in started:
            daemon.stop()


def _request(rid: str = "r") -> GenerationRequest:
    return GenerationRequest(rid, prompt=PROMPT, sampling=SamplingParams(max_tokens=MAX_NEW))


def _actor(
    stage: Stage, model_cid: str, kv: PeerKV | None, cls: type[StageActor] = StageActor
) -> StageActor:
    actor = cls()
    actor.stage = stage
    actor.weights_cid = model_cid
    actor.kv = kv or PeerKV(None, model_cid, BLOCK)
    return actor


def _kv(daemon, directory: Path, model_cid: str) -> PeerKV:
    store = KVStore(KuboClient(daemon.api), directory, 1 << 30, 5.0)
    return PeerKV(store, model_cid, BLOCK)


def _engine(store_dir: Path, prefill: StageActor, decode: StageActor) -> TorchEngine:
    return TorchEngine.over(DisaggregatedRunner(prefill, decode, LocalCalls()), store_dir)


def _run(engine: TorchEngine):
    chunks = list(engine.generate(_request()))
    return [t for c in chunks for t in c.token_ids], chunks[-1]


@pytest.fixture(scope="module")
def prompt_ids(store_dir, stage, model_cid) -> list[int]:
    engine = _engine(store_dir, _actor(stage, model_cid, None), _actor(stage, model_cid, None))
    return engine.prepare(_request()).prompt_ids


@pytest.fixture(scope="module")
def reference(store_dir: Path, prompt_ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture
def pair(stage, model_cid, kubos, tmp_path):
    """A prefill actor on Kubo P and a decode actor on Kubo D, each with a fresh index."""
    p, d = kubos
    prefill = _actor(stage, model_cid, _kv(p, tmp_path / "kv-p", model_cid))
    decode = _actor(stage, model_cid, _kv(d, tmp_path / "kv-d", model_cid))
    yield prefill, decode
    for actor in (prefill, decode):
        actor.kv.close()


@pytest.fixture
def computed(monkeypatch) -> list[tuple[int, int]]:
    """(id of the session, tokens) of every forward, to prove where what was computed."""
    seen: list[tuple[int, int]] = []
    original = StageSession.forward

    def spy(self, inputs, **kwargs):
        seen.append((id(self), inputs.shape[1]))
        return original(self, inputs, **kwargs)

    monkeypatch.setattr(StageSession, "forward", spy)
    return seen


def test_prompt_spans_several_blocks_and_a_tail(prompt_ids) -> None:
    assert len(prompt_ids) > 10 * BLOCK
    assert len(prompt_ids) % BLOCK != 0  # a tail the decode peer computes itself


def test_decode_peer_continues_from_prefill_peers_blocks(
    store_dir, pair, prompt_ids, reference, computed, caplog
) -> None:
    prefill, decode = pair
    tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    full = len(prompt_ids) // BLOCK * BLOCK
    assert last.usage.prompt_tokens == len(prompt_ids)
    assert last.usage.cached_prompt_tokens == full
    assert last.timings.kv_store_ms > 0
    assert last.timings.kv_fetch_ms > 0
    # P computed the whole prompt in one forward; D computed only the tail (and the spot
    # check's row), then decoded.
    sizes = [n for _, n in computed]
    assert sizes[0] == len(prompt_ids)
    assert sizes[1] == len(prompt_ids) - full + 1
    assert sizes[2:] == [1] * (MAX_NEW - 1)
    assert len({sid for sid, _ in computed[1:]}) == 1  # all on the decode peer's session
    # P handed its blocks' bytes over directly, and pinned them in its Kubo meanwhile.
    assert prefill.kv.wait_stored(30.0)
    assert len(prefill.kv.store) == full // BLOCK
    # Both actors freed their sessions.
    assert prefill.sessions == {} and decode.sessions == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_blocks_the_prefill_peer_held_already_are_handed_over_too(
    store_dir, stage, model_cid, kubos, pair, prompt_ids, reference, caplog, tmp_path
) -> None:
    """A prompt P has stored before: its blocks are named by the CIDs P holds, and their
    bytes (encoded again, the same bytes) still go to D directly, not over bitswap."""
    prefill, _ = pair
    blocks = len(prompt_ids) // BLOCK
    for run in ("first", "again"):
        decode = _actor(stage, model_cid, _kv(kubos[1], tmp_path / f"kv-{run}", model_cid))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgellm.cluster.disaggregated.driver"):
            tokens, last = _run(_engine(store_dir, prefill, decode))
        decode.kv.close()
        assert prefill.kv.wait_stored(30.0)
        assert tokens == reference
        assert last.usage.cached_prompt_tokens == blocks * BLOCK
        assert f"{blocks} block parts handed over directly)" in caplog.text
        assert len(prefill.kv.store) == blocks  # the second run stored nothing new


class GarbagePrefill(StageActor):
    """A prefill peer (a fake, named as such) whose handoff carries something other than
    blocks where the bytes go."""

    garbage: object = ("not", "chunks")

    def handoff(self, session_id: str) -> Handoff:
        return dataclasses.replace(super().handoff(session_id), blocks=self.garbage)


@pytest.mark.parametrize("garbage", [("not", "chunks"), {"cid": 5}, [b"x"], ((("c",), (1,), 0),)])
def test_handed_over_garbage_costs_a_recompute(
    store_dir, stage, model_cid, pair, prompt_ids, reference, computed, caplog, garbage
) -> None:
    _, decode = pair
    prefill = _actor(stage, model_cid, pair[0].kv, GarbagePrefill)
    prefill.garbage = garbage
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert [n for _, n in computed][1] == len(prompt_ids)
    assert any(
        "fetching the prefill peer's blocks failed" in r.getMessage()
        and "something other than" in r.getMessage()
        for r in caplog.records
    )


def _spoil(manifest: bytes, index: int, cid: str) -> bytes:
    doc = json.loads(manifest)
    doc["blocks"][index]["parts"][0]["cid"] = cid
    return json.dumps(doc).encode()


class SpoilingPrefill(StageActor):
    """A prefill peer whose manifest names another block's CID for block `index`."""

    index = 4

    def handoff(self, session_id: str) -> Handoff:
        handoff = super().handoff(session_id)
        doc = json.loads(handoff.manifest)
        other = doc["blocks"][self.index + 1]["parts"][0]["cid"]
        return Handoff(
            _spoil(handoff.manifest, self.index, other),
            handoff.store_ms,
            handoff.tokens,
            handoff.warnings,
        )


def _dead_kubo_actor(stage: Stage, model_cid: str, tmp_path: Path) -> StageActor:
    """A decode actor whose Kubo does not answer (nothing listens on port 9)."""
    dead = KVStore(KuboClient("http://127.0.0.1:9"), tmp_path / "kv-dead", 1 << 30, 1.0)
    return _actor(stage, model_cid, PeerKV(dead, model_cid, BLOCK))


def test_decode_peer_with_a_dead_kubo_takes_the_blocks_handed_over(
    store_dir, stage, model_cid, pair, prompt_ids, reference, computed, tmp_path
) -> None:
    """The blocks' bytes come with the handoff: D needs no IPFS to take them."""
    prefill, _ = pair
    decode = _dead_kubo_actor(stage, model_cid, tmp_path)
    tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    full = len(prompt_ids) // BLOCK * BLOCK
    assert last.usage.cached_prompt_tokens == full
    assert [n for _, n in computed][1] == len(prompt_ids) - full + 1  # + the check's row


def test_decode_peer_without_kubo_computes_a_prompt_too_long_to_hand_over(
    store_dir, stage, model_cid, pair, prompt_ids, reference, computed, caplog, tmp_path
) -> None:
    """Over DIRECT_MAX_BYTES the blocks go through IPFS only: a D whose Kubo does not
    answer computes the prompt, with a warning."""
    prefill, _ = pair
    decode = _dead_kubo_actor(stage, model_cid, tmp_path)
    with caplog.at_level(logging.WARNING), pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker, "DIRECT_MAX_BYTES", 0)
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert [n for _, n in computed][1] == len(prompt_ids)
    assert any("p/d:" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


class SwappingPrefill(StageActor):
    """A prefill peer that hands over block `index + 1`'s bytes under block `index`'s CID."""

    index = 3

    def handoff(self, session_id: str) -> Handoff:
        handoff = super().handoff(session_id)
        cids = [b["parts"][0]["cid"] for b in json.loads(handoff.manifest)["blocks"]]
        blocks = dict(handoff.blocks)
        blocks[cids[self.index]] = blocks[cids[self.index + 1]]
        return dataclasses.replace(handoff, blocks=blocks)


@pytest.mark.parametrize(
    ("forger", "why"),
    [
        (SpoilingPrefill, "refused"),  # the manifest names another block's CID
        (SwappingPrefill, "do not match that CID"),  # the bytes are another block's
    ],
)
def test_refused_block_is_recomputed_with_a_warning(
    store_dir, stage, model_cid, pair, prompt_ids, reference, computed, caplog, forger, why
) -> None:
    """A block is checked against its CID (bytes handed over directly too, as a Kubo
    fetch's are) and the request: D keeps the blocks before the first that fails and
    computes from there."""
    _, decode = pair
    prefill = _actor(stage, model_cid, pair[0].kv, forger)
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    good = forger.index * BLOCK
    assert last.usage.cached_prompt_tokens == good
    assert [n for _, n in computed][1] == len(prompt_ids) - good + 1  # + the check's row
    warned = [
        r.getMessage() for r in caplog.records if r.name == "edgellm.cluster.disaggregated.driver"
    ]
    assert any(f"kv block {forger.index}" in m and why in m for m in warned)


def test_import_failing_half_way_is_recomputed_from_scratch(
    store_dir, pair, prompt_ids, reference, computed, caplog, monkeypatch
) -> None:
    """Whatever a peer's blocks make the import raise, after some positions went in, the
    decode peer empties its session and computes the whole prompt."""
    original = kvhandoff.import_blocks

    def half_then_fail(session, blocks):
        original(session, blocks[: len(blocks) // 2])
        raise RuntimeError("a tensor the checks let through")

    monkeypatch.setattr(kvhandoff, "import_blocks", half_then_fail)
    prefill, decode = pair
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert [n for _, n in computed][1] == len(prompt_ids)
    assert any("a tensor the checks let through" in r.getMessage() for r in caplog.records)


def test_no_ipfs_on_either_peer_still_answers(
    store_dir, stage, model_cid, prompt_ids, reference, computed, caplog
) -> None:
    prefill, decode = _actor(stage, model_cid, None), _actor(stage, model_cid, None)
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert last.timings.kv_fetch_ms == 0
    assert [n for _, n in computed][:2] == [len(prompt_ids), len(prompt_ids)]
    assert any("has no IPFS node" in r.getMessage() for r in caplog.records)


class LostBeforeHandoff(StageActor):
    def handoff(self, session_id: str) -> Handoff:
        raise ClusterError("the actor died")


class LostBeforeLogits(StageActor):
    def prefill(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        raise ClusterError("the actor died")

    def handoff(self, session_id: str) -> Handoff:
        raise ClusterError("the actor died")


class LostBeforeOpen(StageActor):
    def open(self, session_id: str, max_positions: int) -> None:
        raise ClusterError("the actor died")


@pytest.mark.parametrize("lost", [LostBeforeHandoff, LostBeforeLogits, LostBeforeOpen])
def test_prefill_peer_lost_costs_a_warning(
    store_dir, stage, model_cid, pair, prompt_ids, reference, computed, caplog, lost
) -> None:
    _, decode = pair
    prefill = _actor(stage, model_cid, pair[0].kv, lost)
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(_engine(store_dir, prefill, decode))
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert any("prefill peer" in r.getMessage() for r in caplog.records)
    assert decode.sessions == {} and decode.prompt_logits == {}


class DecodeLost(StageActor):
    def forward(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        raise ClusterError("a stage failed: the actor died")


def test_decode_peer_lost_fails_the_request(store_dir, stage, model_cid, pair) -> None:
    prefill, _ = pair
    decode = DecodeLost()
    decode.stage, decode.weights_cid, decode.kv = stage, model_cid, PeerKV(None, model_cid, BLOCK)
    engine = _engine(store_dir, prefill, decode)
    chunks = engine.generate(_request())
    first = next(chunks)  # the first token comes from the prefill peer
    assert len(first.token_ids) == 1
    with pytest.raises(ClusterError, match="actor died"):
        next(chunks)


def test_one_token_request_needs_no_decode_step(store_dir, pair, reference) -> None:
    prefill, decode = pair
    engine = _engine(store_dir, prefill, decode)
    request = GenerationRequest("one", prompt=PROMPT, sampling=SamplingParams(max_tokens=1))
    chunks = list(engine.generate(request))
    assert [t for c in chunks for t in c.token_ids] == reference[:1]
    assert chunks[-1].usage.completion_tokens == 1


def test_local_calls_fail_with_edgellm_errors_only() -> None:
    """The runner catches EdgeLLMError alone, so in-process calls report like Ray's."""

    class Actor:
        def fails(self) -> None:
            raise ValueError("bad input")

        def lost(self) -> None:
            raise ClusterError("the actor died")

    calls = LocalCalls()
    with pytest.raises(ClusterError, match="^the call failed: ValueError: bad input$"):
        calls.get(calls.submit(Actor(), "fails"), "the call failed")
    with pytest.raises(ClusterError, match="^the actor died$"):
        calls.get(calls.submit(Actor(), "lost"), "not this")


class DecodeLostAfter(StageActor):
    """A decode peer that dies after `steps` decode steps: its calls fail from then on, as
    a SIGKILLed peer's do over Ray."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, session_id: str, inputs: torch.Tensor) -> torch.Tensor:
        self.steps -= 1
        if self.steps < 0:
            raise ClusterError("a stage failed: the actor died")
        return super().forward(session_id, inputs)


LOST_AFTER = 3  # decode steps; the lost decode peer produced LOST_AFTER + 1 tokens


def _lose_decode_peer(store_dir, stage, model_cid, prefill, handoffs) -> list[int]:
    """Run the request until its decode peer dies; the tokens it produced."""
    lost = DecodeLostAfter(LOST_AFTER)
    lost.stage, lost.weights_cid, lost.kv = stage, model_cid, PeerKV(None, model_cid, BLOCK)
    runner = DisaggregatedRunner(prefill, lost, LocalCalls(), handoffs=handoffs, model_id="m")
    chunks = TorchEngine.over(runner, store_dir).generate(_request())
    produced = [t for _ in range(LOST_AFTER + 1) for t in next(chunks).token_ids]
    with pytest.raises(ClusterError, match="actor died"):
        next(chunks)
    chunks.close()
    return produced


def _replace_decode_peer(store_dir, prefill, replacement, handoffs, produced):
    """The failover: a new runner over the same prefill peer and the replacement, on the
    same cluster session's handoffs, resumes the request; (all tokens, last chunk)."""
    runner = DisaggregatedRunner(
        prefill, replacement, LocalCalls(), handoffs=handoffs, model_id="m"
    )
    chunks = list(TorchEngine.over(runner, store_dir).resume(_request("r-f1"), produced))
    return produced + [t for c in chunks for t in c.token_ids], chunks[-1]


def test_replacement_decode_peer_fetches_the_prompts_blocks(
    store_dir, stage, model_cid, pair, kubos, prompt_ids, reference, computed, caplog, tmp_path
) -> None:
    prefill, _ = pair
    handoffs = RecentHandoffs()
    produced = _lose_decode_peer(store_dir, stage, model_cid, prefill, handoffs)
    assert produced == reference[: LOST_AFTER + 1]
    assert len(handoffs) == 1  # the prefill peer's handoff, kept for a replacement
    replacement = _actor(stage, model_cid, _kv(kubos[1], tmp_path / "kv-d2", model_cid))
    computed.clear()
    caplog.clear()  # the lost peer's warning (it had no IPFS node)
    with caplog.at_level(logging.WARNING):
        tokens, last = _replace_decode_peer(store_dir, prefill, replacement, handoffs, produced)
    replacement.kv.close()
    assert tokens == reference
    full = len(prompt_ids) // BLOCK * BLOCK
    assert last.usage.prompt_tokens == len(prompt_ids)
    assert last.usage.completion_tokens == MAX_NEW
    # The replacement took the prompt's whole blocks from the prefill peer's Kubo...
    assert last.usage.cached_prompt_tokens == full
    assert last.timings.kv_fetch_ms > 0 and last.timings.kv_store_ms == 0
    # ...and computed the prompt's tail and the produced tokens on top (with the spot
    # check's row), in one forward, then decoded; the prefill peer computed nothing and
    # stored nothing more.
    sizes = [n for _, n in computed]
    assert sizes[0] == len(prompt_ids) + len(produced) - full + 1
    assert sizes[1:] == [1] * (MAX_NEW - len(produced) - 1)
    assert len({sid for sid, _ in computed}) == 1
    assert len(prefill.kv.store) == full // BLOCK
    assert replacement.sessions == {} and prefill.sessions == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(handoffs) == 1  # kept again, should the replacement be lost too


def _unknown_cid() -> str:
    """A CID (raw, sha256) of bytes no Kubo holds."""
    digest = hashlib.sha256(b"no peer holds this block").digest()
    raw = base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + digest).decode().lower()
    return "b" + raw.rstrip("=")


@pytest.mark.parametrize("blocks", ["refused", "not fetched"])
def test_replacement_computes_everything_when_the_blocks_cannot_be_had(
    store_dir,
    stage,
    model_cid,
    pair,
    kubos,
    prompt_ids,
    reference,
    computed,
    caplog,
    tmp_path,
    blocks,
) -> None:
    """The prompt's first block is another's (refused) or held by no one (the holder is
    gone): the replacement computes the prompt and the produced tokens, with a warning."""
    prefill, _ = pair
    handoffs = RecentHandoffs()
    produced = _lose_decode_peer(store_dir, stage, model_cid, prefill, handoffs)
    kept = handoffs.take("another runner", "m", [*prompt_ids, *produced])
    assert kept is not None
    doc = json.loads(kept.handoff.manifest)
    bad = doc["blocks"][1]["parts"][0]["cid"] if blocks == "refused" else _unknown_cid()
    spoiled = Handoff(_spoil(kept.handoff.manifest, 0, bad), 1.0, kept.handoff.tokens)
    handoffs.keep(kept.runner, kept.model, kept.prompt, spoiled)
    store = KVStore(KuboClient(kubos[1].api), tmp_path / "kv-d2", 1 << 30, 1.0)
    replacement = _actor(stage, model_cid, PeerKV(store, model_cid, BLOCK))
    computed.clear()
    with caplog.at_level(logging.WARNING):
        tokens, last = _replace_decode_peer(store_dir, prefill, replacement, handoffs, produced)
    replacement.kv.close()
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert [n for _, n in computed][0] == len(prompt_ids) + len(produced)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("kv block 0" in m and blocks in m for m in warned), warned


class ForgingPrefill(StageActor):
    """A prefill peer (a fake, named as such: no honest peer forges) that hands over
    well-formed blocks of finite K/V that are not the model's, stored in its own Kubo;
    its first token's logits are honest. Only the decode peer's spot check can tell."""

    def handoff(self, session_id: str) -> Handoff:
        handoff = super().handoff(session_id)
        doc = json.loads(handoff.manifest)
        forge_parts(self.kv.store.client, doc, BLOCK)
        return Handoff(json.dumps(doc).encode(), handoff.store_ms, handoff.tokens, handoff.warnings)


def test_forged_handoff_fails_the_decode_peers_spot_check(
    store_dir, stage, model_cid, pair, kubos, prompt_ids, reference, computed, caplog
) -> None:
    _, decode = pair
    prefill = _actor(stage, model_cid, pair[0].kv, ForgingPrefill)
    # The plan names the peers, as the node's does: the prefill one is reported.
    plan = Plan(
        "s-forged",
        (
            PlanStage("peer:12D3KooWPrefill", LayerRange(0, 30), model_cid, StageRole.PREFILL),
            PlanStage("peer:12D3KooWDecode", LayerRange(0, 30), model_cid, StageRole.DECODE),
        ),
    )
    runner = DisaggregatedRunner(prefill, decode, LocalCalls(), plan=plan)
    with caplog.at_level(logging.WARNING):
        chunks = list(TorchEngine.over(runner, store_dir).generate(_request()))
    tokens, last = [t for c in chunks for t in c.token_ids], chunks[-1]
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert last.dropped_kv_holders == (kubos[0].peer_id,)
    assert last.dropped_workers == ("12D3KooWPrefill",)
    wire = generate_response("r", last)  # what the node reads
    assert list(wire.dropped_workers) == ["12D3KooWPrefill"]
    assert list(wire.dropped_kv_holders) == [kubos[0].peer_id]
    assert "spot check of the prefill peer's block" in caplog.text
    # D computed the tail with the check's row, then, after the mismatch, the whole prompt.
    full = len(prompt_ids) // BLOCK * BLOCK
    assert [n for _, n in computed][1:3] == [len(prompt_ids) - full + 1, len(prompt_ids)]
    assert len(decode.kv.store) == 0  # nothing of P's adopted, so nothing re-announced
