"""Distributed inference on real Ray: a head (token auth) and two worker nodes, each a
separate process tree with its own peer resource, on this machine."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from edgellm.cluster import procs, ray_start
from edgellm.cluster.actor import stage_threads
from edgellm.cluster.manager import ClusterManager
from edgellm.cluster.node import MARKER_ENV, NodeConfig, RayletNotRegistered, RayNode
from edgellm.cluster.plan import Plan, PlanStage
from edgellm.cluster.token import RayToken
from edgellm.engine.base import EngineConfig
from edgellm.engine.torch.engine import TorchEngine
from edgellm.engine.torch.stage import LayerRange
from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import ClusterError, InvalidRequest, WeightsMismatch
from edgellm.models.store import ModelStore
from tests.python.runs import Run, batched_steps, run_all

pytestmark = pytest.mark.ray_cluster

MODEL_ID = "smollm2-135m"
SESSION = "test-session"
SPLIT = 13
MAX_NEW = 20
PROMPTS = [
    GenerationRequest("a", prompt="What is the capital of France?"),
    GenerationRequest("b", raw_prompt="def fibonacci(n):"),
]


def _with(request: GenerationRequest, **sampling) -> GenerationRequest:
    params = SamplingParams(**{"max_tokens": MAX_NEW, **sampling})
    return GenerationRequest(request.request_id, request.prompt, None, request.raw_prompt, params)


def _tokens(engine: TorchEngine, request: GenerationRequest) -> list[int]:
    return [t for chunk in engine.generate(request) for t in chunk.token_ids]


def _prestarted_worker(manager: ClusterManager, wait_s: float = 60.0) -> int | None:
    """The pid of the idle Ray worker a joined node started, with torch loaded (the
    stage actor's module preloaded: manager.STAGE_NODE_ENV); None if none appears within
    `wait_s`. (Ray workers rename themselves: an idle one's cmdline is "ray::IDLE".)"""
    (session,) = manager._sessions.values()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for pid in session.node.members():
            with contextlib.suppress(OSError):  # a short-lived process ended meanwhile
                idle = Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::IDLE")
                if idle and b"libtorch_cpu" in Path(f"/proc/{pid}/maps").read_bytes():
                    return pid
        time.sleep(0.2)  # polls a condition: the raylet starts its worker as it comes up
    return None


class Cluster:
    def __init__(self, work_dir: Path, models_dir: Path) -> None:
        self.work_dir = work_dir
        self.token = RayToken.generate()
        self.head = ClusterManager(work_dir, models_dir)
        self.peers = [ClusterManager(work_dir, models_dir) for _ in range(2)]
        session = self.head.start_head(SESSION, "127.0.0.1", self.token.value)
        self.address = session.node.address
        for i, peer in enumerate(self.peers):
            peer.join(SESSION, self.address, self.token.value, f"peer:p{i}", "127.0.0.1")
        # Each peer's Ray worker started with its node, before any actor was asked for.
        self.prestarted = [_prestarted_worker(peer) for peer in self.peers]

    def close(self) -> None:
        for manager in (*self.peers, self.head):
            manager.close()

    def leftovers(self) -> list[int]:
        return procs.marked(MARKER_ENV, str(self.work_dir))


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, isolated_network: None
) -> Iterator[Cluster]:
    work_dir = tmp_path_factory.mktemp("ray")
    made = Cluster.__new__(Cluster)  # so teardown can run whatever started
    try:
        made.__init__(work_dir, models_dir)
        yield made
    finally:
        if hasattr(made, "head"):
            made.close()
        assert procs.marked(MARKER_ENV, str(work_dir)) == []


@pytest.fixture(scope="module")
def cid(models_dir: Path) -> str:
    return ModelStore(models_dir).manifest(MODEL_ID).weights_cid


def _plan(cid: str, split: int = SPLIT) -> Plan:
    return Plan(
        SESSION,
        (
            PlanStage("peer:p0", LayerRange(0, split), cid),
            PlanStage("peer:p1", LayerRange(split, 30), cid),
        ),
    )


@pytest.fixture(scope="module")
def distributed(cluster: Cluster, cid: str, store_dir: Path) -> TorchEngine:
    engine = cluster.head.engine(_plan(cid), MODEL_ID, store_dir, 30)
    return engine


@pytest.fixture(scope="module")
def local(store_dir: Path) -> TorchEngine:
    return TorchEngine.load(EngineConfig(store_dir))


@pytest.fixture(scope="module")
def expected(local: TorchEngine, store_dir: Path) -> dict[str, list[int]]:
    reference = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    out = {}
    for request in PROMPTS:
        ids = torch.tensor([local.prepare(_with(request)).prompt_ids])
        generated = reference.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
        out[request.request_id] = generated[0, ids.shape[1] :].tolist()
    return out


def test_stages_run_on_their_peers(cluster: Cluster, distributed: TorchEngine) -> None:
    pids = distributed.pipeline.pids
    # Each stage runs in the worker its node started as it joined, which imported the
    # stage's module meanwhile (manager.STAGE_NODE_ENV), not in one started on demand.
    assert pids == cluster.prestarted
    for peer, pid in zip(cluster.peers, pids, strict=True):
        (session,) = peer._sessions.values()
        assert pid in session.node.members()
        # Stage threads spin only briefly between parallel regions unless the user says
        # otherwise (node.STAGE_ENV_DEFAULTS: a long-spinning idle stage slowed the other's
        # token, sleeping at once slowed every prefill).
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        want = os.environ.get("GOMP_SPINCOUNT", "10000").encode()
        assert b"GOMP_SPINCOUNT=" + want in environ


def test_a_stage_decodes_on_half_its_cores(cluster: Cluster, distributed: TorchEngine) -> None:
    """After a request, whose last call to each stage was a decode step, the stage's torch
    runs on half the cores it may use (actor.stage_threads); a prefill takes them all."""
    list(distributed.generate(_with(PROMPTS[0])))
    for actor in distributed.pipeline.actors:
        threads, cores = ray.get(
            actor.__ray_call__.remote(
                lambda self: (torch.get_num_threads(), len(os.sched_getaffinity(0)))
            )
        )
        assert threads == max(1, cores // 2)


@pytest.mark.parametrize(
    ("cores", "positions", "threads"),
    [(2, 1, 1), (2, 40, 2), (1, 1, 1), (1, 9, 1), (16, 1, 8), (16, 2, 16), (3, 1, 1)],
)
def test_stage_threads(monkeypatch, cores: int, positions: int, threads: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert stage_threads(positions) == threads


def test_nodes_run_without_the_components_nobody_reads(cluster: Cluster) -> None:
    """No node runs Ray's log monitor (the driver takes no worker logs) and the head runs no
    autoscaler monitor (node.UNUSED_COMPONENT_FLAGS), API server or client server
    (ray_start.UNUSED_HEAD_PROCESSES): each would be one more Python process importing Ray
    on every cold split's path. The components a node needs still run."""

    def scripts(manager: ClusterManager) -> list[str]:
        (session,) = manager._sessions.values()
        lines = []
        for pid in session.node.members():
            with contextlib.suppress(OSError):  # a short-lived process ended meanwhile
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                lines.append(cmdline.replace(b"\0", b" ").decode())
        return lines

    for manager in (cluster.head, *cluster.peers):
        running = " | ".join(scripts(manager))
        assert "raylet" in running, running
        assert "log_monitor.py" not in running, running
        assert "autoscaler/_private/monitor.py" not in running, running
        assert "dashboard/dashboard.py" not in running, running
        assert "ray.util.client.server" not in running, running
    assert "gcs_server" in " ".join(scripts(cluster.head))


def test_a_batch_of_logits_comes_back_in_the_reply(distributed: TorchEngine) -> None:
    """The cluster returns results up to 2 MiB in the task's reply (node.SYSTEM_CONFIG, set
    on the head and handed by Ray to every node): a decode step's logits for a batch of 8
    skip the peer's object store, which a larger result still takes."""
    from ray.experimental import get_object_locations

    @ray.remote(num_cpus=0.001, resources={"peer:p1": 0.001})
    def logits(floats: int) -> torch.Tensor:
        return torch.zeros(floats)

    batch = logits.remote(8 * 49152)  # 1.5 MiB
    large = logits.remote(2**20)  # 4 MiB
    ray.get([batch, large])
    where = get_object_locations([batch, large])
    assert where[batch]["node_ids"] == []  # in the driver's memory, from the reply
    assert where[large]["node_ids"]  # in object stores (the peer's, then the driver's)


@pytest.mark.parametrize("request_", PROMPTS, ids=lambda r: r.request_id)
def test_two_peer_greedy_matches_generate(distributed, expected, request_) -> None:
    assert _tokens(distributed, _with(request_)) == expected[request_.request_id]


def test_sampling_with_seed_is_reproducible(distributed, local) -> None:
    request = _with(PROMPTS[0], temperature=1.0, top_p=0.95, top_k=50, seed=11)
    first = _tokens(distributed, request)
    assert first == _tokens(distributed, request)
    assert first == _tokens(local, request)


def _renamed(request: GenerationRequest, suffix: str) -> GenerationRequest:
    return dataclasses.replace(request, request_id=request.request_id + suffix)


def test_two_peer_batch_matches_generate(distributed, expected) -> None:
    """Four requests at once on two stage actors: each decode step carries the batch's
    activations from stage to stage, and every sequence equals generate."""
    before = batched_steps(distributed)
    runs = [Run(distributed, _renamed(_with(r), s)) for r in PROMPTS for s in ("1", "2")]
    run_all(runs)
    for run in runs:
        assert (run.error, run.tokens) == (None, expected[run.request.request_id[0]])
    assert batched_steps(distributed) > before


# Raw prompts that go on well past the kill (no early EOS).
LASTING = [
    GenerationRequest("k1", raw_prompt="1, 2, 3, 4,"),
    GenerationRequest("k2", raw_prompt="def fibonacci(n):"),
    GenerationRequest("k3", raw_prompt="Once upon a time, in a land far away, there lived a"),
]
LASTING_NEW = 48


def test_stage_killed_mid_batch_fails_every_sequence_over(
    cluster: Cluster, cid: str, store_dir: Path, local: TorchEngine
) -> None:
    """A stage actor dies under a batch of three: each sequence fails with the error a
    lone request gets (ClusterError, what the Go requester fails over on), and each one's
    resume on a new cluster, with the tokens it had (as the requester replays them),
    completes the greedy answer of generate."""
    engine = cluster.head.engine(_plan(cid, split=10), MODEL_ID, store_dir, 30)
    requests = [_with(r, max_tokens=LASTING_NEW) for r in LASTING]
    runs = [Run(engine, r) for r in requests]
    for run in runs:
        run.start()
    for run in runs:
        run.started_decoding.wait(timeout=300)
    ray.kill(engine.pipeline.actors[1])
    for run in runs:
        run.join(timeout=300)
    assert [type(r.error) for r in runs] == [ClusterError] * 3, [r.error for r in runs]
    assert all(0 < len(r.tokens) < LASTING_NEW for r in runs)
    replanned = cluster.head.engine(_plan(cid, split=15), MODEL_ID, store_dir, 30)
    reference = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    for run in runs:
        resumed = [t for c in replanned.resume(run.request, run.tokens) for t in c.token_ids]
        ids = torch.tensor([local.prepare(run.request).prompt_ids])
        whole = reference.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=LASTING_NEW
        )[0, ids.shape[1] :].tolist()
        assert run.tokens + resumed == whole


def test_cancel_ends_a_wait_on_a_stage_that_never_answers(
    cluster: Cluster, cid: str, store_dir: Path
) -> None:
    """A stage that stops answering (its process frozen, as behind a cut link) holds the
    batch's step until Ray gives up on the node; the request's cancel ends its wait at once,
    so a failover's next attempt does not wait behind it (batcher._next_item)."""
    import os
    import signal

    from edgellm.errors import RequestCancelled

    # A plan of its own: the session's earlier plans' actors are gone (one plan at a time).
    engine = cluster.head.engine(_plan(cid, split=12), MODEL_ID, store_dir, 30)
    runner = engine.pipeline
    run = Run(engine, _with(LASTING[0], max_tokens=LASTING_NEW))
    run.start()
    run.started_decoding.wait(timeout=300)
    os.kill(runner.pids[0], signal.SIGSTOP)
    try:
        run.join(2)
        assert run.is_alive(), "a frozen stage answered to the end"
        run.cancel.set()
        run.join(30)  # a bound for a hung test, not a speed claim
        assert not run.is_alive()
        assert isinstance(run.error, RequestCancelled), run.error
    finally:
        os.kill(runner.pids[0], signal.SIGCONT)


def test_weights_cid_mismatch_is_refused(cluster: Cluster, store_dir: Path) -> None:
    wrong = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    with pytest.raises(WeightsMismatch, match="the plan names " + wrong):
        cluster.head.engine(_plan(wrong, split=10), MODEL_ID, store_dir, 30)


def test_wrong_token_is_refused_and_nothing_is_left(cluster: Cluster, tmp_path: Path) -> None:
    config = NodeConfig(
        "127.0.0.1", tmp_path, head_address=cluster.address, resources={"peer:intruder": 1}
    )
    with pytest.raises(ClusterError, match="(?i)token") as refused:
        RayNode.start(config, RayToken.generate())
    # The reason leads (callers cut long messages short), then the log's tail.
    reason = str(refused.value).partition(": ")[2].partition(" (log: ")[0]
    assert "token" in reason.lower(), str(refused.value)
    assert procs.marked(MARKER_ENV, str(tmp_path)) == []


def test_nodes_stop_and_ray_start_exits_by_itself(tmp_path: Path, isolated_network: None) -> None:
    """A cluster's nodes stop, the head first as a cluster's teardown does: their Ray
    components are killed at once (node._stop) and `ray start` exits on its SIGTERM by
    itself, not after hanging for the stop's whole grace in its drain (node.STOP_ENV),
    which asks the head's GCS and so hangs once the head is gone, until procs.stop_session
    SIGKILLs it. A node's keeper exits with `ray start`'s own status, or is killed (-9)
    when it outlives the grace. Nothing of either node is left."""
    token = RayToken.generate()
    head = RayNode.start(NodeConfig("127.0.0.1", tmp_path / "head"), token)
    try:
        worker = RayNode.start(
            NodeConfig("127.0.0.1", tmp_path / "worker", head_address=head.address), token
        )
    finally:
        head.stop()
    worker.stop()
    assert (head.proc.returncode, worker.proc.returncode) == (1, 1)
    assert procs.marked(MARKER_ENV, str(tmp_path)) == []


def _is_raylet(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text() == "raylet\n"
    return False


def _raylet_of(work_dir: Path, starting: Future) -> int:
    """The pid of the raylet of the node starting in `work_dir`, as soon as it exists."""
    while not starting.done():
        for entry in os.listdir("/proc"):
            pid = int(entry) if entry.isdigit() else 0
            with contextlib.suppress(OSError):
                if _is_raylet(pid) and procs.environ(pid).get(MARKER_ENV) == str(work_dir):
                    return pid
        time.sleep(0.002)
    raise AssertionError(f"the node ended before its raylet started: {starting.result()}")


def test_a_raylet_slow_to_register_still_joins(tmp_path: Path, isolated_network: None) -> None:
    """A joining node whose raylet registers with the head's GCS only after Ray's own
    hard-coded 30 s (which failed `ray start` with "timed out during startup"): its raylet
    is stopped (SIGSTOP) the moment it exists, past those 30 s, and the node still comes
    up once it runs again (ray_start.patient)."""
    stopped_s = 35.0
    assert stopped_s < ray_start.REGISTER_WAIT_S
    token = RayToken.generate()
    head = RayNode.start(NodeConfig("127.0.0.1", tmp_path / "head"), token)
    try:
        with ThreadPoolExecutor(1) as pool:
            config = NodeConfig("127.0.0.1", tmp_path / "worker", head_address=head.address)
            starting = pool.submit(RayNode.start, config, token)
            raylet = _raylet_of(tmp_path / "worker", starting)
            os.kill(raylet, signal.SIGSTOP)
            try:
                time.sleep(stopped_s)
                # Still starting: the raylet had not registered when it was stopped.
                assert not starting.done(), starting.result()
            finally:
                os.kill(raylet, signal.SIGCONT)
            worker = starting.result(timeout=60)
        assert raylet in worker.members()
        worker.stop()
    finally:
        head.stop()
    assert procs.marked(MARKER_ENV, str(tmp_path)) == []


def _start_with_raylet_stopped(
    tmp_path: Path, head: RayNode, token: RayToken, timeout_s: float
) -> tuple[Future, int]:
    """A worker node starting (in a thread) whose first raylet is stopped (SIGSTOP) the
    moment it exists and never continued; its pid."""
    pool = ThreadPoolExecutor(1)
    config = NodeConfig(
        "127.0.0.1", tmp_path / "worker", head_address=head.address, start_timeout_s=timeout_s
    )
    starting = pool.submit(RayNode.start, config, token)
    pool.shutdown(wait=False)
    raylet = _raylet_of(tmp_path / "worker", starting)
    os.kill(raylet, signal.SIGSTOP)
    return starting, raylet


def test_a_raylet_that_never_registers_is_replaced(tmp_path: Path, isolated_network: None) -> None:
    """A joining node whose raylet never registers (stopped for good) is started once more,
    on new ports, and joins with its second raylet; the first is gone."""
    token = RayToken.generate()
    head = RayNode.start(NodeConfig("127.0.0.1", tmp_path / "head"), token)
    try:
        starting, first = _start_with_raylet_stopped(tmp_path, head, token, 120.0)
        worker = starting.result(timeout=150)
        try:
            raylets = [p for p in worker.members() if _is_raylet(p)]
            assert len(raylets) == 1 and first not in raylets
            state = procs.stat(first)
            assert state is None or state[0] == "Z"  # killed (a zombie until reaped)
        finally:
            worker.stop()
    finally:
        head.stop()
    assert procs.marked(MARKER_ENV, str(tmp_path)) == []


def test_a_node_says_when_its_raylet_never_registered(
    tmp_path: Path, isolated_network: None
) -> None:
    """With no time left for a second start, a raylet that never registers fails the
    node's start with Ray's reason, and leaves nothing."""
    token = RayToken.generate()
    head = RayNode.start(NodeConfig("127.0.0.1", tmp_path / "head"), token)
    try:
        timeout_s = ray_start.REGISTER_WAIT_S + 30  # less than two waits for registration
        starting, _ = _start_with_raylet_stopped(tmp_path, head, token, timeout_s)
        with pytest.raises(RayletNotRegistered) as info:
            starting.result(timeout=timeout_s + 30)
        assert "timed out during startup" in str(info.value)
    finally:
        head.stop()
    assert procs.marked(MARKER_ENV, str(tmp_path)) == []


BAD_PLANS = [
    ((), "plan has no stages"),
    ((("peer:p0", 0, 10), ("peer:p1", 11, 30)), "layers must be contiguous"),
    ((("peer:p0", 0, 10), ("peer:p1", 10, 29)), "plan covers layers [0, 29)"),
    ((("peer:p0", 0, 10), ("peer:p0", 10, 30)), "appears twice"),
    ((("p0", 0, 30),), "peer resource must be"),
    ((("peer:p0", 0, 31),), "must lie within [0, 30)"),
]


@pytest.mark.parametrize(("stages", "message"), BAD_PLANS)
def test_bad_plans_are_invalid(stages, message) -> None:
    plan = Plan(SESSION, tuple(PlanStage(p, LayerRange(a, b), "bafk") for p, a, b in stages))
    with pytest.raises(InvalidRequest) as info:
        plan.validate(30)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("token", "message"),
    [("abc", "64 hex characters, got 3"), ("z" * 64, "hex characters only")],
)
def test_bad_tokens_are_invalid(token: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        RayToken.parse(token)


def test_token_never_shows_in_repr() -> None:
    token = RayToken.generate()
    assert token.value not in repr(token) and token.value not in str(token)
