"""Cluster sessions of one backend: the head it started (and drives), the clusters it joined.

One head per backend at a time (a process can drive one Ray cluster); any number of
joined clusters. Every node is stopped by pid on LeaveCluster, on failure, and on close.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgellm import warm
from edgellm.cluster.address import bind_host, head_address
from edgellm.cluster.disaggregated.handoffs import RecentHandoffs
from edgellm.cluster.node import NodeConfig, ProgressFn, RayNode
from edgellm.cluster.plan import Plan, peer_resource, session_id
from edgellm.cluster.reap import reap
from edgellm.cluster.token import RayToken
from edgellm.engine.base import Engine
from edgellm.engine.registry import engine_class
from edgellm.errors import ClusterError, InvalidRequest

if TYPE_CHECKING:
    from edgellm.cluster.driver import Driver

log = logging.getLogger(__name__)

# A node that serves a stage starts, as its raylet comes up, one Ray worker per CPU that
# imports the stage actor's module at once (torch and transformers, ~5 s of CPU), and Ray
# places the stage actor on that worker. Ray 2.60 prestarts no worker by default
# (enable_worker_prestart), so a stage's worker was started, and began those imports, only
# when the driver asked for the actor, after every join: the imports were on the first
# token's path. Two stage actors created and loaded 8.5 s after their peers joined, 1.0 s
# with this when the imports had had 10 s (two cores, one machine); in a cold split they get
# what is left of the joins and the driver's own start.
STAGE_NODE_ENV = {
    "RAY_enable_worker_prestart": "1",
    "RAY_preload_python_modules": "edgellm.cluster.actor",
}


@dataclass
class ClusterSession:
    session_id: str
    node: RayNode
    is_head: bool
    # Engines over this cluster, by (model id, plan stages); the head's only.
    engines: dict[tuple, Engine] = field(default_factory=dict)
    # Held while this session's engines are built or closed (requests run concurrently:
    # the engine batches them).
    busy: threading.Lock = field(default_factory=threading.Lock)
    # Its P/D requests' recent KV handoffs, which outlive a plan: a failover's new decode
    # peer starts from the lost one's (edgellm.cluster.disaggregated.handoffs).
    handoffs: RecentHandoffs = field(default_factory=RecentHandoffs)


class ClusterManager:
    def __init__(
        self,
        work_dir: Path,
        models_dir: Path,
        num_cpus: int = 1,
        ipfs_api: str = "",
        ipfs_gateway: str = "",
        engine: str = "torch",
        max_batch: int = 8,
        kv_budget_mb: int = 512,
        kv_dir: Path | None = None,
        spot_check: bool = True,
    ) -> None:
        self._work_dir = Path(work_dir)
        # This peer's KV block store (one directory per model under it), shared by the
        # backend's engine and the stage actors of its Ray node (edgellm.kv.store).
        self._kv_dir = Path(kv_dir) if kv_dir is not None else self._work_dir / "stage-kv"
        self._models_dir = Path(models_dir)
        self._num_cpus = num_cpus
        # Stage actors on this node reach this peer's Kubo for KV blocks.
        self._ipfs_api = ipfs_api
        self._ipfs_gateway = ipfs_gateway
        # The engine (edgellm.engine.registry) that drives the stages of a plan.
        self._engine = engine
        # The slot pool of each plan's stages (continuous batching).
        self._batch = (max_batch, kv_budget_mb)
        # Whether a split's prefill after cached blocks spot-checks one (kv.spot_check).
        self._spot_check = spot_check
        # Ray is imported on first use, so a backend that never clusters never loads it.
        self._driver: Driver | None = None
        self._sessions: dict[str, ClusterSession] = {}
        self._guard = threading.Lock()
        # What a SIGKILLed backend of this data dir left (see reap.py).
        reap(self._work_dir)

    def _config(self, host: str, head: str | None, peer: str | None) -> NodeConfig:
        return NodeConfig(
            host=host,
            work_dir=self._work_dir,
            head_address=head,
            resources={peer: 1} if peer else {},
            # The head only coordinates unless it also serves a stage (peer named).
            num_cpus=self._num_cpus if peer or head else 0,
            env={**self._env(), **(STAGE_NODE_ENV if peer else {})},
        )

    def _env(self) -> dict[str, str]:
        env = {"EDGELLM_MODELS_DIR": str(self._models_dir)}
        if self._ipfs_api:
            env["EDGELLM_IPFS_API"] = self._ipfs_api
            env["EDGELLM_IPFS_GATEWAY"] = self._ipfs_gateway
            # Stage actors' blocks land in this backend's store: indexed, evicted and
            # announced with the rest.
            env["EDGELLM_STAGE_KV_DIR"] = str(self._kv_dir)
        return env

    def _claim(self, sid: str) -> None:
        with self._guard:
            if sid in self._sessions:
                raise InvalidRequest(f"session {sid!r} already has a cluster on this backend")

    def start_head(
        self, sid: str, bind: str, token: str, peer: str = "", progress: ProgressFn | None = None
    ) -> ClusterSession:
        sid, host, secret = session_id(sid), bind_host(bind), RayToken.parse(token)
        if peer:
            peer_resource(peer)
        self._claim(sid)
        driver = self._get_driver()
        if driver.connected:
            raise ClusterError("this backend already drives a cluster; leave it first")
        node = RayNode.start(self._config(host, None, peer or None), secret, progress)
        try:
            driver.connect(node.address, secret.env(node.temp / "auth_token"), node.temp)
        except BaseException:
            node.stop()
            raise
        return self._add(ClusterSession(sid, node, is_head=True))

    def join(
        self,
        sid: str,
        head: str,
        token: str,
        peer: str,
        bind: str,
        progress: ProgressFn | None = None,
    ) -> ClusterSession:
        sid, head, secret = session_id(sid), head_address(head), RayToken.parse(token)
        peer, host = peer_resource(peer), bind_host(bind)
        self._claim(sid)
        node = RayNode.start(self._config(host, head, peer), secret, progress)
        return self._add(ClusterSession(sid, node, is_head=False))

    def _get_driver(self) -> Driver:
        if self._driver is None:
            from edgellm.cluster.driver import Driver

            self._driver = Driver()
        return self._driver

    def _add(self, session: ClusterSession) -> ClusterSession:
        with self._guard:
            if session.session_id in self._sessions:  # lost a race with the same id
                self._stop(session)
                raise InvalidRequest(f"session {session.session_id!r} already has a cluster")
            self._sessions[session.session_id] = session
        return session

    def get(self, sid: str) -> ClusterSession:
        with self._guard:
            session = self._sessions.get(sid)
        if session is None:
            raise InvalidRequest(f"unknown cluster session {sid!r}")
        return session

    def engine(self, plan: Plan, model_id: str, model_dir: Path, num_layers: int) -> Engine:
        """The engine running `plan` (built on first use)."""
        plan.validate(num_layers)
        session = self.get(plan.session_id)
        if not session.is_head:
            raise InvalidRequest(f"session {plan.session_id!r} was joined, not started, here")
        key = (model_id, plan.stages)
        with session.busy:
            engine = session.engines.get(key)
            if engine is None:
                for old in session.engines.values():  # one plan's actors at a time
                    _close_in_background(old)
                session.engines.clear()
                started = time.monotonic()
                engine = _build(
                    engine_class(self._engine),
                    plan,
                    model_id,
                    model_dir,
                    self._batch,
                    session.handoffs,
                    self._spot_check,
                )
                log.info("plan's stages loaded in %.2fs", time.monotonic() - started)
                session.engines[key] = engine
        return engine

    def leave(self, sid: str) -> bool:
        with self._guard:
            session = self._sessions.pop(sid, None)
        if session is None:
            return False
        self._stop(session)
        return True

    def _stop(self, session: ClusterSession) -> None:
        started = time.monotonic()
        if session.is_head:
            with session.busy:
                for engine in session.engines.values():
                    engine.close()
                session.engines.clear()
            self._get_driver().disconnect()
        head_done = time.monotonic()
        session.node.stop()
        ended = time.monotonic()
        log.info(
            "left cluster session %s in %.2fs (engines and driver %.2fs, ray node %.2fs)",
            session.session_id,
            ended - started,
            head_done - started,
            ended - head_done,
        )

    def close(self) -> None:
        """Leave every session at once, so a backend's stop takes one node's stop time
        however many clusters it is in (see procs.TERM_GRACE_S for the budget)."""
        with self._guard:
            ids = list(self._sessions)
        threads = [threading.Thread(target=self.leave, args=(sid,)) for sid in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _close_in_background(engine: Engine) -> None:
    """Close a replaced plan's engine without waiting for it: after a lost stage (a cut
    link) its batch step waits until Ray declares that node dead, tens of seconds, and the
    failover's new plan must not wait behind it. Its requests already failed over."""

    def close() -> None:
        try:
            engine.close()
        except Exception as exc:  # noqa: BLE001 - its requests failed over already
            # Its cluster session may have ended meanwhile (Ray disconnected here).
            log.info("cluster: a replaced plan's engine closed with an error: %s", exc)

    threading.Thread(target=close, name="close-old-plan", daemon=True).start()


def _build(
    engine: type[Engine],
    plan: Plan,
    model_id: str,
    model_dir: Path,
    batch: tuple[int, int],
    handoffs: RecentHandoffs,
    spot_check: bool = True,
) -> Engine:
    """An engine over the plan's stage actors: a pipeline's, or a prefill/decode plan's
    (prefill on one peer, decode on the other, KV blocks handed over through IPFS; the
    cluster session's recent handoffs let a failover's new decode peer start from them)."""
    warm.wait()  # transformers may still be importing in the background (edgellm.warm)
    if plan.disaggregated:
        from edgellm.cluster.disaggregated.driver import DisaggregatedRunner

        return engine.over(DisaggregatedRunner.load(plan, model_id, handoffs), model_dir)
    from transformers import AutoConfig

    from edgellm.cluster.pipeline import RayPipeline
    from edgellm.engine.torch.slots import slots_for

    slots = slots_for(AutoConfig.from_pretrained(model_dir), *batch)
    return engine.over(RayPipeline.load(plan, model_id, slots, spot_check), model_dir)
