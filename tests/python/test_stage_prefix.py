"""A split's prefix cache without Ray: two in-process stage actors (layers [0, 15) and
[15, 30)), each with its own real Kubo daemon, driven by the real decode loop through a
RaySession calling them through LocalCalls instead of Ray's.

After a first run each stage holds its layer range's blocks of the prompt; a second run
takes them on every stage and computes only the rest; stages holding different counts
all crop to the smallest; a holder gone between lookup and fetch, and blocks labelled
for another layer split, cost a warning and a recompute; forged K/V fail the prefill's
spot check, which drops them and their holders. Greedy tokens always equal transformers
generate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.cluster.actor import StageActor
from edgellm.cluster.calls import AfterOpen
from edgellm.cluster.disaggregated.driver import LocalCalls
from edgellm.cluster.disaggregated.worker import PeerKV
from edgellm.cluster.pipeline import RaySession
from edgellm.engine.runner import Slots
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.torch.stage import LayerRange, Stage, StageSession
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import ClusterError, InvalidRequest
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.keys import ChainSpec, chain
from edgellm.kv.store import KVStore
from edgellm.models.manifest import Manifest
from edgellm.server.kv import manifest_of
from tests.python.forged import forge_parts

BLOCK = 16
MAX_NEW = 8
SPLIT = 15
PROMPT = (
    " ".join(
        f"Record {i}: the glacier moved {i + 2} metres this season, the survey team counted "
        f"{i + 11} crevasses and planted a red flag near the northern moraine."
        for i in range(9)
    )
    + "\n\nHow far did the glacier move in record 5?"
)


class ChainSession(RaySession):
    """RaySession over in-process actors (LocalCalls). After the prefill it waits for the
    stages' stores, as RayPipeline.close does before it stops them, so a test's next step
    sees them."""

    def __init__(
        self, actors: list[StageActor], sid: str, positions: int, calls: LocalCalls | None = None
    ) -> None:
        # As RayPipeline.session: the opens are not waited for on their own.
        opened = AfterOpen.open(calls or LocalCalls(), actors, sid, positions)
        super().__init__(actors, sid, calls=opened)

    def _keep(self, prompt) -> None:
        super()._keep(prompt)
        for actor in self.actors:
            assert actor.prefix_drain(60.0)


class Recorded(LocalCalls):
    """LocalCalls that record each submit and get, by method, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def submit(self, actor, method: str, *args):
        handle = super().submit(actor, method, *args)
        handle.method = method
        self.events.append(("submit", method))
        return handle

    def get(self, handle, what: str):
        self.events.append(("get", getattr(handle, "method", "")))
        return super().get(handle, what)


class Chain:
    def __init__(self, actors: list[StageActor], calls: LocalCalls | None = None) -> None:
        self.actors = actors
        self.calls = calls
        self.count = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def slots(self) -> Slots:
        return Slots(1, 2**62)  # one request at a time, as a RayPipeline without a pool

    def session(self, max_positions: int) -> ChainSession:
        self.count += 1
        return ChainSession(self.actors, f"s{self.count}", max_positions, self.calls)

    def forward_batch(self, sessions: list[ChainSession], input_ids: torch.Tensor) -> torch.Tensor:
        x = input_ids
        for actor in self.actors:
            x = actor.forward_batch([s.sid for s in sessions], x)
        return x

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def model_cid(store_dir: Path) -> str:
    return Manifest.read(store_dir).weights_cid


@pytest.fixture(scope="module")
def stages(store_dir: Path) -> tuple[Stage, Stage]:
    return Stage(store_dir, LayerRange(0, SPLIT)), Stage(store_dir, LayerRange(SPLIT, 30))


@pytest.fixture(scope="module")
def kubos(tmp_path_factory: pytest.TempPathFactory):
    from tests.python.conftest import KuboDaemon, _require_ipfs

    _require_ipfs()
    started = []
    try:
        for name in ("kubo-a", "kubo-b", "kubo-c"):
            started.append(KuboDaemon(tmp_path_factory.mktemp(name) / "repo"))
        yield tuple(started)
    finally:
        for daemon in started:
            daemon.stop()


def _actor(stage: Stage, model_cid: str, daemon, directory: Path, timeout: float = 5.0):
    actor = StageActor()
    actor.stage, actor.weights_cid = stage, model_cid
    store = KVStore(KuboClient(daemon.api), directory, 1 << 30, timeout)
    actor.kv = PeerKV(store, model_cid, BLOCK)
    return actor


def _request(manifest: bytes = b"") -> GenerationRequest:
    sampling = SamplingParams(max_tokens=MAX_NEW)
    return GenerationRequest("r", prompt=PROMPT, sampling=sampling, kv_manifest=manifest)


def _run(store_dir: Path, actors: list[StageActor], manifest: bytes = b"", calls=None):
    engine = TorchEngine.over(Chain(actors, calls), store_dir)
    chunks = list(engine.generate(_request(manifest)))
    return [t for c in chunks for t in c.token_ids], chunks[-1]


@pytest.fixture(scope="module")
def prompt_ids(store_dir: Path) -> list[int]:
    return TorchEngine.load_encoder(store_dir).encode(_request())


@pytest.fixture(scope="module")
def reference(store_dir: Path, prompt_ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def filled(store_dir, stages, model_cid, kubos, tmp_path_factory, prompt_ids, reference):
    """A first split run: each stage stored its layers' blocks of the prompt."""
    base = tmp_path_factory.mktemp("kv")
    actors = [
        _actor(stages[0], model_cid, kubos[0], base / "a"),
        _actor(stages[1], model_cid, kubos[1], base / "b"),
    ]
    tokens, last = _run(store_dir, actors)
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    return actors


@pytest.fixture
def computed(monkeypatch) -> list[tuple[int, int]]:
    """(first layer of the stage, tokens) of every forward."""
    seen: list[tuple[int, int]] = []
    original = StageSession.forward

    def spy(self, inputs, **kwargs):
        seen.append((self.kv_layout.layer_start, inputs.shape[1]))
        return original(self, inputs, **kwargs)

    monkeypatch.setattr(StageSession, "forward", spy)
    return seen


def _spec(model_cid: str) -> ChainSpec:
    return ChainSpec(model_cid, "float32", BLOCK)  # the embedded model's K/V dtype


def _keys(model_cid: str, prompt_ids: list[int]) -> list[bytes]:
    return chain(_spec(model_cid), prompt_ids)


def test_first_run_stores_each_stages_layers(filled, prompt_ids, model_cid) -> None:
    full = len(prompt_ids) // BLOCK
    keys = _keys(model_cid, prompt_ids)
    for actor, (start, end) in zip(filled, [(0, SPLIT), (SPLIT, 30)], strict=True):
        store = actor.kv.store
        assert store.keys() == keys[:full]
        for key in keys[:full]:
            parts = sorted((p.layer_start, p.layer_end) for p in store.parts(key))
            assert parts[0][0] == start and parts[-1][1] == end
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))


def test_second_run_takes_every_stages_blocks(
    store_dir, filled, prompt_ids, reference, computed, caplog
) -> None:
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(store_dir, filled)
    assert tokens == reference
    cached = (len(prompt_ids) - 1) // BLOCK * BLOCK
    assert last.usage.cached_prompt_tokens == cached
    # Each stage computed only the rest of the prompt and the spot check's row, then one
    # token at a time.
    rest = len(prompt_ids) - cached + 1
    assert computed[:2] == [(0, rest), (SPLIT, rest)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_stages_import_with_the_prefill(store_dir, filled, reference) -> None:
    """The stages' imports of the cached blocks are not a round trip of their own: the
    driver submits them, then the prefill, and reads the imports' replies after."""
    calls = Recorded()
    tokens, last = _run(store_dir, filled, calls=calls)
    assert tokens == reference and last.usage.cached_prompt_tokens > 0
    events = calls.events
    first_prefill = events.index(("submit", "forward_checked"))
    assert events[:first_prefill].count(("submit", "prefix_take")) == 2
    assert ("get", "prefix_take") not in events[:first_prefill]
    assert events.count(("get", "prefix_take")) == 2


def test_a_stage_importing_other_tokens_fails_the_request(store_dir, filled, monkeypatch) -> None:
    """A stage whose import took other tokens than the rest would run the prompt at
    other positions: the request fails rather than answer from it."""
    stage = filled[1]
    real = StageActor.prefix_take
    monkeypatch.setattr(stage, "prefix_take", lambda sid, count: real(stage, sid, count - 1))
    with pytest.raises(ClusterError, match="a stage imported .* cached prompt tokens"):
        _run(store_dir, filled)


def test_stages_with_fewer_blocks_make_all_crop(
    store_dir, filled, prompt_ids, reference, model_cid, computed, caplog
) -> None:
    keys = _keys(model_cid, prompt_ids)
    store = filled[1].kv.store
    for key in keys[3:]:
        for part in store.parts(key):
            store.forget(key, part.layer_start, part.layer_end)
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(store_dir, filled)
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 3 * BLOCK
    assert computed[0] == (0, len(prompt_ids) - 3 * BLOCK + 1)  # + the spot check's row
    assert any("all take the first 3" in r.getMessage() for r in caplog.records)
    # The run stored the second stage's missing blocks again.
    assert len(store.keys()) == len(prompt_ids) // BLOCK


def _manifest(actor: StageActor, model_cid: str, prompt_ids, daemon) -> bytes:
    spec = _spec(model_cid)
    providers = [f"{daemon.addrs[0]}/p2p/{daemon.peer_id}"]
    doc, _ = manifest_of(actor.kv.store, spec, _keys(model_cid, prompt_ids), providers)
    return doc


def test_blocks_from_other_peers_through_the_manifest(
    store_dir, stages, filled, prompt_ids, reference, model_cid, kubos, tmp_path
) -> None:
    """A split on two fresh peers (one Kubo for both) takes the blocks from the first
    run's peers through one merged manifest, and keeps them once verified."""
    a = json.loads(_manifest(filled[0], model_cid, prompt_ids, kubos[0]))
    b = json.loads(_manifest(filled[1], model_cid, prompt_ids, kubos[1]))
    n = min(len(a["blocks"]), len(b["blocks"]))
    for ba, bb in zip(a["blocks"][:n], b["blocks"][:n], strict=True):
        ba["parts"] += bb["parts"]
    a["blocks"] = a["blocks"][:n]
    a["providers"] += b["providers"]
    fresh = [
        _actor(stages[0], model_cid, kubos[2], tmp_path / "c0"),
        _actor(stages[1], model_cid, kubos[2], tmp_path / "c1"),
    ]
    tokens, last = _run(store_dir, fresh, json.dumps(a).encode())
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == min(n, (len(prompt_ids) - 1) // BLOCK) * BLOCK
    assert len(fresh[0].kv.store) == len(prompt_ids) // BLOCK  # fetched ones kept, rest stored


def test_blocks_for_another_layer_split_are_refused(
    store_dir, stages, filled, prompt_ids, reference, model_cid, kubos, tmp_path, caplog
) -> None:
    """A manifest whose parts claim layers [0, 15) but hold the second stage's: the
    first stage refuses them and every stage computes."""
    doc = json.loads(_manifest(filled[1], model_cid, prompt_ids, kubos[1]))
    for block in doc["blocks"]:
        for part in block["parts"]:
            part["layer_start"], part["layer_end"] = 0, SPLIT
    fresh = [
        _actor(stages[0], model_cid, kubos[2], tmp_path / "d0"),
        _actor(stages[1], model_cid, kubos[2], tmp_path / "d1"),
    ]
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(store_dir, fresh, json.dumps(doc).encode())
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_holder_gone_between_lookup_and_fetch(
    store_dir, stages, prompt_ids, reference, model_cid, start_kubo, tmp_path, caplog
) -> None:
    holder = start_kubo()
    first = [
        _actor(stages[0], model_cid, holder, tmp_path / "h0"),
        _actor(stages[1], model_cid, holder, tmp_path / "h1"),
    ]
    _run(store_dir, first)
    a = json.loads(_manifest(first[0], model_cid, prompt_ids, holder))
    b = json.loads(_manifest(first[1], model_cid, prompt_ids, holder))
    for ba, bb in zip(a["blocks"], b["blocks"], strict=True):
        ba["parts"] += bb["parts"]
    holder.kill()  # gone after the lookup
    # A Kubo of its own: kubos[2] kept these very blocks (same bytes, same CIDs) in an
    # earlier test, and would serve them itself.
    fetcher = start_kubo()
    fresh = [
        _actor(stages[0], model_cid, fetcher, tmp_path / "e0", timeout=1.0),
        _actor(stages[1], model_cid, fetcher, tmp_path / "e1", timeout=1.0),
    ]
    with caplog.at_level(logging.WARNING):
        tokens, last = _run(store_dir, fresh, json.dumps(a).encode())
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    assert any("not fetched" in r.getMessage() for r in caplog.records)


def _forged_manifest(filled, model_cid, prompt_ids, kubos) -> tuple[bytes, set[str]]:
    """Both stages' real manifest, merged, with every part of the second stage's layers
    replaced by a well-formed block of finite K/V that are not the model's (its holder
    stored them): only the spot check can tell. The forged CIDs too."""
    a = json.loads(_manifest(filled[0], model_cid, prompt_ids, kubos[0]))
    b = json.loads(_manifest(filled[1], model_cid, prompt_ids, kubos[1]))
    forged = forge_parts(KuboClient(kubos[1].api), b, BLOCK)
    n = min(len(a["blocks"]), len(b["blocks"]))
    for ba, bb in zip(a["blocks"][:n], b["blocks"][:n], strict=True):
        ba["parts"] += bb["parts"]
    a["blocks"] = a["blocks"][:n]
    a["providers"] += b["providers"]
    return json.dumps(a).encode(), forged


def test_forged_blocks_fail_the_stages_spot_check(
    store_dir, stages, filled, prompt_ids, reference, model_cid, kubos, tmp_path, computed, caplog
) -> None:
    """A holder serving finite K/V that are not the model's for the second stage's layers:
    the prefill's spot check catches it on that stage, every stage empties its session and
    keeps none of the fetched blocks, the whole prompt is computed (same greedy tokens),
    and the manifest's holders are reported with the first token."""
    payload, forged = _forged_manifest(filled, model_cid, prompt_ids, kubos)
    fresh = [
        _actor(stages[0], model_cid, kubos[2], tmp_path / "f0"),
        _actor(stages[1], model_cid, kubos[2], tmp_path / "f1"),
    ]
    engine = TorchEngine.over(Chain(fresh), store_dir)
    with caplog.at_level(logging.WARNING, logger="edgellm"):
        chunks = list(engine.generate(_request(payload)))
    tokens, last = [t for c in chunks for t in c.token_ids], chunks[-1]
    assert tokens == reference
    assert last.usage.cached_prompt_tokens == 0
    holders = tuple(sorted({kubos[0].peer_id, kubos[1].peer_id}))
    assert [c.dropped_kv_holders for c in chunks] == [holders] + [()] * (len(chunks) - 1)
    assert "spot check of cached position" in caplog.text
    # The rest of the prompt with the check's row on each stage, then the whole prompt.
    cached = (len(prompt_ids) - 1) // BLOCK * BLOCK
    rest = len(prompt_ids) - cached + 1
    assert computed[:4] == [
        (0, rest),
        (SPLIT, rest),
        (0, len(prompt_ids)),
        (SPLIT, len(prompt_ids)),
    ]
    # Nothing fetched was kept (neither the forged parts nor the first stage's good ones,
    # fetched for the same request): each stage holds only what it computed itself.
    for actor in fresh:
        held = {part.cid for part in actor.kv.store.entries()}
        assert held and not held & forged
        assert len(actor.kv.store) == len(prompt_ids) // BLOCK


def test_a_failed_open_is_the_error_the_request_sees() -> None:
    """A session's opens are not waited for on their own (AfterOpen): when one fails, every
    later reply raises its error. The prefix lookup takes a stage's failed fetch as a miss,
    so the request's prefill is what fails, with the open's error and not the missing
    session's KeyError."""
    actor = StageActor()  # no stage loaded: its open fails
    session = RaySession([actor], "s", calls=AfterOpen.open(LocalCalls(), [actor], "s", 8))
    assert session.load_prefix([1, 2, 3], b"") == (0, 0.0)
    with pytest.raises(InvalidRequest, match="stage not loaded"):
        session.forward(torch.tensor([[1, 2, 3]]))
