"""Prefill/decode disaggregation: the prompt on peer P, the decode on peer D, the KV cache
handed over as IPFS blocks.

A P/D plan (plan.py) has two stages, each holding every layer. For one request:

1. P computes the whole prompt (`StageActor.prefill`) and returns the last position's
   logits: the first token is sampled from exactly the math a single process does.
2. P stores the prompt's full blocks in its own Kubo and builds their manifest, naming its
   IPFS addresses as providers (`StageActor.handoff`, `PeerKV.store_prompt`); P's session
   is freed then.
3. D connects its Kubo to P's, fetches the blocks by CID (bitswap), checks each against
   the request (handoff.fetch_blocks: model CID, layers, dtype, shape, position, token
   ids, chained key) and imports the leading good ones; it computes the rest of the prompt
   itself: the tail that fills no whole block, and everything from the first block that
   is missing or refused, with a warning (`StageActor.load_kv`, `PeerKV.load`).
4. Every later token runs on D only.

The driver submits 1-3 back to back: D's load takes P's handoff as a Ray object reference,
so the manifest goes P -> D without a round-trip through the driver, and the handoff
overlaps sampling and streaming the first token (time to first token is P's prefill).

Nothing about IPFS fails a request: with no Kubo on P or D, a Kubo that does not answer,
or blocks that do not check out, D computes that part of the prompt and says so. A
prefill peer lost before its handoff arrived costs nothing but time either: D computes the
prompt (for the first token too, if P was lost before its logits came back or before the
request reached it). A decode peer
lost is a ClusterError like any stage's loss (the node decides about failover).

Warnings raised on P and D travel back with the results (Ray actors' logs do not reach
the requester) and are logged by the requester's backend.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from edgellm.cluster.plan import Plan, StageRole
from edgellm.engine.runner import KVStats
from edgellm.engine.torch.stage import StageSession
from edgellm.errors import ClusterError, InvalidRequest, KuboError, ManifestRefused
from edgellm.kv import block as blockfmt
from edgellm.kv import handoff as kvhandoff
from edgellm.kv.handoff import StageKV
from edgellm.kv.ipfs import KuboClient
from edgellm.kv.keys import ChainSpec, chain
from edgellm.kv.manifest import KVManifest
from edgellm.kv.prefix import FETCH_WORKERS, merge
from edgellm.kv.store import KVStore

log = logging.getLogger(__name__)

# Where a stage actor keeps its block index (one directory per model CID under it); the
# cluster manager sets it for its Ray node. Default: <kv dir>/stage.
STAGE_KV_DIR_ENV = "EDGELLM_STAGE_KV_DIR"
# IPFS addresses of the prefill peer a manifest names at most.
MAX_PROVIDERS = 16
# Seconds to wait for one swarm/connect to the prefill peer's Kubo.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Handoff:
    """What P hands D: the manifest of the prompt's stored blocks (b"": none)."""

    manifest: bytes = b""
    store_ms: float = 0.0
    # Prompt tokens the manifest covers (whole blocks).
    tokens: int = 0
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Loaded:
    """What D did with a handoff."""

    # Prompt tokens whose K/V D took from P's blocks.
    cached_tokens: int = 0
    # Connect, fetch, verify and import (D's side).
    fetch_ms: float = 0.0
    # Storing the blocks (P's side, passed along).
    store_ms: float = 0.0
    # Prompt tokens D computed itself.
    computed_tokens: int = 0
    # float32 logits [1, vocab] of the prompt's last position when D computed it, else
    # None (the actor keeps them for take_logits; they do not travel back by default).
    logits: torch.Tensor | None = None
    warnings: tuple[str, ...] = ()


class _Collect(logging.Handler):
    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """Warnings the `edgellm` loggers emit on this thread meanwhile (they are logged too)."""
    handler = _Collect(threading.get_ident())
    root = logging.getLogger("edgellm")
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


class PeerKV:
    """One peer's side of P/D: its block store in its own Kubo (None: no IPFS here)."""

    def __init__(self, store: KVStore | None, model_cid: str, block_size: int) -> None:
        self.store = store
        self.model_cid = model_cid
        self.block_size = block_size
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, model_cid: str) -> PeerKV:
        """The store this process's configuration names (EDGELLM_IPFS_API, kv: section)."""
        from edgellm.config import load_config

        config = load_config().kv
        if not config.enabled:
            return cls(None, model_cid, config.block_size)
        base = os.environ.get(STAGE_KV_DIR_ENV) or str(Path(config.dir or ".") / "stage")
        client = KuboClient(config.ipfs_api, gateway=config.ipfs_gateway)
        store = KVStore(
            client, Path(base) / model_cid, config.max_store_mb << 20, config.fetch_timeout_s
        )
        return cls(store, model_cid, config.block_size)

    def _chain(self, session: StageSession, block_size: int) -> ChainSpec:
        return ChainSpec(self.model_cid, blockfmt.dtype_name(session.kv_layout.dtype), block_size)

    def providers(self) -> tuple[str, ...]:
        """This peer's IPFS addresses, each ending in /p2p/<its Kubo peer id>."""
        if self.store is None:
            return ()
        ident = self.store.client.id()
        peer = ident.get("ID")
        out = []
        for addr in ident.get("Addresses") or ():
            if not isinstance(addr, str) or not addr or len(addr) > 512:
                continue
            if "/p2p/" not in addr and isinstance(peer, str):
                addr = f"{addr}/p2p/{peer}"
            out.append(addr)
        return tuple(out[:MAX_PROVIDERS])

    # -- prefill peer ------------------------------------------------------------------

    def store_prompt(self, session: StageSession, token_ids: Sequence[int]) -> Handoff:
        """Store the full blocks of a prefilled session; their manifest for the decode peer.
        Never raises: without a store, or when Kubo fails, the manifest is empty."""
        with _warnings() as warned:
            started = time.monotonic()
            handoff, tokens = b"", 0
            if self.store is None:
                log.warning(
                    "kv: the prefill peer has no IPFS node (EDGELLM_IPFS_API unset); "
                    "the decode peer computes the prompt"
                )
            else:
                try:
                    handoff, tokens = self._store(session, token_ids)
                except Exception as exc:  # noqa: BLE001 - storing must never fail a request
                    log.warning(
                        "kv: the prefill peer could not store the prompt's blocks (%s); "
                        "the decode peer computes the prompt",
                        exc,
                    )
            ms = (time.monotonic() - started) * 1000.0
        return Handoff(handoff, ms, tokens, tuple(warned))

    def _store(self, session: StageSession, token_ids: Sequence[int]) -> tuple[bytes, int]:
        assert self.store is not None
        kv = StageKV.of(session.kv_layout, self.model_cid, self.block_size)
        keys = chain(kv.chain, token_ids)
        with torch.inference_mode():
            refs = kvhandoff.store_session(
                session, self.store, self.model_cid, self.block_size, token_ids, keys
            )
        if not refs:
            return b"", 0
        manifest = merge(kv, [refs], self.providers())
        return manifest.to_json(), len(refs) * self.block_size

    # -- decode peer -------------------------------------------------------------------

    def load(self, session: StageSession, handoff: Handoff, token_ids: Sequence[int]) -> Loaded:
        """Fill a fresh session with the prompt: P's blocks as far as they check out, the
        rest computed here. Only a failure of the computation itself raises."""
        if session.position != 0:
            raise InvalidRequest("the decode session already holds tokens")
        with _warnings() as warned:
            started = time.monotonic()
            cached = 0
            if not handoff.manifest:
                pass  # P said why (its warnings travel along)
            elif self.store is None:
                log.warning(
                    "kv: the decode peer has no IPFS node (EDGELLM_IPFS_API unset); "
                    "computing the prompt's %d tokens",
                    len(token_ids),
                )
            else:
                try:
                    cached = self._fetch(session, handoff.manifest, token_ids)
                except Exception as exc:  # noqa: BLE001 - the handoff must never fail a request
                    log.warning(
                        "kv: fetching the prefill peer's blocks failed (%s); "
                        "computing the whole prompt",
                        exc,
                    )
                    session.reset()
                    cached = 0
            fetch_ms = (time.monotonic() - started) * 1000.0 if handoff.manifest else 0.0
            rest = list(token_ids[cached:])
            logits = None
            if rest:
                logits = session.forward(torch.tensor([rest], dtype=torch.long))
        return Loaded(
            cached, fetch_ms, handoff.store_ms, len(rest), logits, handoff.warnings + tuple(warned)
        )

    def _fetch(self, session: StageSession, data: bytes, token_ids: Sequence[int]) -> int:
        assert self.store is not None
        try:
            manifest = KVManifest.from_json(data)
        except ManifestRefused as exc:
            log.warning("kv: refusing the prefill peer's manifest: %s; computing the prompt", exc)
            return 0
        spec = self._chain(session, manifest.block_size)
        theirs = (manifest.model_cid, manifest.dtype)
        if theirs != (spec.model_cid, spec.dtype):
            log.warning(
                "kv: refusing a manifest for model %s (%s); this request is %s (%s); "
                "computing the prompt",
                *theirs,
                spec.model_cid,
                spec.dtype,
            )
            return 0
        self._connect(manifest.providers)
        keys = chain(spec, token_ids)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="pd-fetch")
        with torch.inference_mode():
            fetched = kvhandoff.fetch_into(
                session,
                self.store,
                manifest,
                self.model_cid,
                spec.block_size,
                token_ids,
                keys,
                len(keys),
                self._pool,
            )
        cached = len(fetched.blocks) * spec.block_size
        log.info(
            "kv: %d of %d prompt tokens from the prefill peer's blocks", cached, len(token_ids)
        )
        return cached

    def _connect(self, providers: Sequence[str]) -> None:
        """Connect this peer's Kubo to the prefill peer's (any one address will do)."""
        assert self.store is not None
        errors = []
        for addr in providers:
            try:
                self.store.client.swarm_connect(
                    addr, timeout_s=min(CONNECT_TIMEOUT_S, self.store.fetch_timeout_s)
                )
                return
            except KuboError as exc:
                errors.append(f"{addr}: {exc}")
        if errors:
            log.warning(
                "kv: cannot connect to the prefill peer's IPFS node (%s); fetching anyway",
                "; ".join(errors)[-600:],
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.client.close()


# -- the runner -------------------------------------------------------------------------


class Calls(Protocol):
    """How the runner calls the two stage actors: Ray's remote calls, or plain calls."""

    def submit(self, actor: Any, method: str, *args: Any) -> Any:
        """Start `actor.method(*args)`; an argument may be another call's handle."""

    def get(self, handle: Any, what: str) -> Any:
        """The call's result; raises an EdgeLLMError saying `what` failed."""

    def done(self, handle: Any) -> bool:
        """Whether the call has finished (either way)."""

    def kill(self, actors: Sequence[Any]) -> None:
        """Stop the actors."""


class RayCalls:
    def submit(self, actor: Any, method: str, *args: Any) -> Any:
        return getattr(actor, method).remote(*args)

    def get(self, handle: Any, what: str) -> Any:
        import ray
        from ray.exceptions import RayError

        from edgellm.cluster.pipeline import ray_error

        try:
            return ray.get(handle)
        except RayError as exc:
            raise ray_error(exc, what) from None

    def done(self, handle: Any) -> bool:
        import ray

        ready, _ = ray.wait([handle], timeout=0)
        return bool(ready)

    def kill(self, actors: Sequence[Any]) -> None:
        import ray

        for actor in actors:
            ray.kill(actor)


@dataclass
class _Done:
    value: Any = None
    error: BaseException | None = None


class LocalCalls:
    """In-process actors (tests, and a second transport later): each call runs at once."""

    def submit(self, actor: Any, method: str, *args: Any) -> _Done:
        try:
            resolved = [self.get(a, "") if isinstance(a, _Done) else a for a in args]
            return _Done(getattr(actor, method)(*resolved))
        except Exception as exc:  # noqa: BLE001 - kept for get(), like a remote call's error
            return _Done(error=exc)

    def get(self, handle: _Done, what: str) -> Any:
        if handle.error is not None:
            raise handle.error
        return handle.value

    def done(self, handle: _Done) -> bool:
        return True

    def kill(self, actors: Sequence[Any]) -> None:
        return None


class DisaggregatedRunner:
    """The StageRunner of a P/D plan: actors[0] prefills, actors[1] decodes."""

    def __init__(
        self, prefill: Any, decode: Any, calls: Calls, pids: Sequence[int] = (), plan=None
    ) -> None:
        self.prefill = prefill
        self.decode = decode
        self.calls = calls
        self.actors = [prefill, decode]
        # Stage actor pids, prefill then decode (each on its peer's node).
        self.pids = list(pids)
        self.plan = plan

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @classmethod
    def load(cls, plan: Plan, model_id: str) -> DisaggregatedRunner:
        """Start the two stage actors on their peers, each loading every layer."""
        from edgellm.cluster.pipeline import RayPipeline

        roles = tuple(s.role for s in plan.stages)
        if roles != (StageRole.PREFILL, StageRole.DECODE):
            raise InvalidRequest(f"not a prefill/decode plan: roles {roles}")
        pipeline = RayPipeline.load(plan, model_id)
        prefill, decode = pipeline.actors
        return cls(prefill, decode, RayCalls(), pipeline.pids, plan)

    def session(self, max_positions: int) -> DisaggregatedSession:
        """Open the request on both peers; without the prefill peer (lost since the
        last request) the decode peer does it all, with a warning."""
        sid = uuid.uuid4().hex
        prefill = self.calls.submit(self.prefill, "open", sid, max_positions)
        decode = self.calls.submit(self.decode, "open", sid, max_positions)
        self.calls.get(decode, "opening the decode stage's session failed")
        session = DisaggregatedSession(self, sid)
        try:
            self.calls.get(prefill, "opening the prefill stage's session failed")
        except Exception as exc:  # noqa: BLE001 - the decode peer can do it all
            session.prefill_lost = f"{exc}"
        return session

    def close(self) -> None:
        self.calls.kill(self.actors)
        self.actors = []


@dataclass
class DisaggregatedSession:
    runner: DisaggregatedRunner
    sid: str
    prompt: list[int] | None = None
    handoff: Any = None
    load: Any = None
    loaded: Loaded | None = None
    warned: set[str] = field(default_factory=set)
    # Why the prefill peer cannot take this request ("" while it can).
    prefill_lost: str = ""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.prompt is None:
            return self._prefill(input_ids)
        if self.loaded is None:
            self._await_load()
        calls = self.runner.calls
        handle = calls.submit(self.runner.decode, "forward", self.sid, input_ids)
        return calls.get(handle, "the decode stage failed")

    def _prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        runner, calls = self.runner, self.runner.calls
        self.prompt = [int(t) for t in input_ids[0].tolist()]
        if self.prefill_lost:
            self._warn(
                f"the prefill peer is gone ({self.prefill_lost}); "
                "the decode peer computes the prompt"
            )
            self.load = calls.submit(runner.decode, "load_kv", self.sid, Handoff(), self.prompt)
            return self._decode_logits(self.prefill_lost)
        logits = calls.submit(runner.prefill, "prefill", self.sid, input_ids)
        self.handoff = calls.submit(runner.prefill, "handoff", self.sid)
        self.load = calls.submit(runner.decode, "load_kv", self.sid, self.handoff, self.prompt)
        try:
            return calls.get(logits, "the prefill stage failed")
        except Exception as exc:  # noqa: BLE001 - the decode peer can do it all
            self._warn(f"the prefill peer failed ({exc}); the decode peer computes the prompt")
            return self._decode_logits(str(exc))

    def _decode_logits(self, why: str) -> torch.Tensor:
        """The first token's logits from the decode peer, which computed the prompt."""
        calls = self.runner.calls
        self._await_load()
        handle = calls.submit(self.runner.decode, "take_logits", self.sid)
        logits = calls.get(handle, "the decode stage failed computing the prompt")
        if logits is None:  # took every block from P after all: no position left
            raise ClusterError(f"the prefill stage failed: {why}")
        return logits

    def _await_load(self) -> None:
        calls = self.runner.calls
        try:
            loaded = calls.get(self.load, "the decode stage failed loading the prompt")
        except Exception:
            if not self._handoff_failed():
                raise
            # D never ran the load (its argument failed): its session is still empty.
            self._warn(
                "the prefill peer was lost before handing over its KV blocks; "
                "the decode peer computes the prompt"
            )
            decode = self.runner.decode
            self.load = calls.submit(decode, "load_kv", self.sid, Handoff(), self.prompt)
            loaded = calls.get(self.load, "the decode stage failed computing the prompt")
        self.loaded = loaded
        for message in loaded.warnings:
            self._warn(message)
        log.info(
            "p/d: %d prompt tokens from the prefill peer's KV blocks, %d computed on the "
            "decode peer (store %.0f ms, fetch %.0f ms)",
            loaded.cached_tokens,
            loaded.computed_tokens,
            loaded.store_ms,
            loaded.fetch_ms,
        )

    def _handoff_failed(self) -> bool:
        calls = self.runner.calls
        if self.handoff is None:  # none was asked for: the failure was D's own
            return False
        try:
            calls.get(self.handoff, "")
        except Exception:  # noqa: BLE001 - any failure of P's handoff
            return True
        return False

    def _warn(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning("p/d: %s", message)

    def kv_stats(self) -> KVStats:
        """The handoff so far: D's load if it finished, else P's store if that did."""
        calls = self.runner.calls
        loaded = self.loaded
        if loaded is None and self.load is not None and calls.done(self.load):
            try:
                loaded = calls.get(self.load, "")
            except Exception:  # noqa: BLE001 - stats only
                loaded = None
        if loaded is not None:
            return KVStats(loaded.cached_tokens, loaded.fetch_ms, loaded.store_ms)
        if self.handoff is not None and calls.done(self.handoff):
            try:
                return KVStats(store_ms=calls.get(self.handoff, "").store_ms)
            except Exception:  # noqa: BLE001 - stats only
                pass
        return KVStats()

    def close(self) -> None:
        for actor in self.runner.actors:
            try:
                self.runner.calls.submit(actor, "close", self.sid)
            except Exception as exc:  # noqa: BLE001 - best effort, the actor may be gone
                log.debug("p/d: closing a stage session: %s", exc)
