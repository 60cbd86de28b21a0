"""Loaded models: load on demand (converting into the store first) within the model memory
budget (edgellm.server.budget: the least recently used idle model goes first), measured
speeds. Concurrent generations of a model go to its engine at once; the engine batches them.
A running request, or a cluster session, holds its model (`hold`) so it is never unloaded
under it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgellm.config import KVConfig
from edgellm.engine.base import Engine, EngineConfig, PromptEncoder
from edgellm.engine.registry import engine_class
from edgellm.engine.types import Speeds
from edgellm.errors import InvalidRequest, RecoverableError, Unavailable
from edgellm.models.convert import PHASE_LOAD, ProgressFn
from edgellm.models.manifest import Manifest
from edgellm.models.store import ModelStore
from edgellm.server.budget import MemoryBudget

log = logging.getLogger(__name__)

PHASE_CALIBRATE = "measuring speed"


@dataclass
class LoadedModel:
    manifest: Manifest
    engine: Engine
    speeds: Speeds
    load_s: float = 0.0  # how long its load took


def _quiet(phase: str, done: int, total: int) -> None:
    pass


class ModelManager:
    def __init__(
        self,
        store: ModelStore,
        engine: str,
        device: str,
        calibrate: bool,
        kv: KVConfig | None = None,
        max_batch: int = 8,
        kv_budget_mb: int = 512,
        memory_budget: int = 1 << 62,
    ) -> None:
        self.store = store
        self._kv = kv
        self._batch = (max_batch, kv_budget_mb)  # each engine's slot pool
        self._engine = engine
        self._device = device
        self._calibrate = calibrate
        self._loaded: dict[str, LoadedModel] = {}
        self._guard = threading.Lock()  # protects _loaded, budget and _load_s
        self._loading = threading.Lock()  # one load at a time: each makes room for itself
        self.budget = MemoryBudget(memory_budget)
        self._load_s: dict[str, float] = {}  # each model's last load, kept after unloading

    @property
    def engine(self) -> str:
        """The engine's name (edgellm.engine.registry) models load with."""
        return self._engine

    @property
    def kv_config(self) -> KVConfig:
        """The `kv:` section engines load with (the defaults when none was given)."""
        return self._kv or KVConfig()

    def get(self, model_id: str) -> LoadedModel | None:
        with self._guard:
            return self._loaded.get(model_id)

    def loaded(self) -> list[LoadedModel]:
        with self._guard:
            return list(self._loaded.values())

    def load(self, model_id: str, progress: ProgressFn | None = None) -> LoadedModel:
        """The loaded model, loading (and converting) it first if needed; makes room by
        unloading idle models (least recently used first)."""
        progress = progress or _quiet
        self.store.known(model_id)  # NOT_FOUND before anything else
        if (model := self._touch(model_id)) is not None:
            return model
        with self._loading:
            if (model := self._touch(model_id)) is not None:
                return model  # loaded while this call waited
            model = self._load(model_id, progress)
            with self._guard:
                self._loaded[model_id] = model
                self._load_s[model_id] = model.load_s
        return model

    def _touch(self, model_id: str) -> LoadedModel | None:
        with self._guard:
            model = self._loaded.get(model_id)
            if model is not None:
                self.budget.touch(model_id)
            return model

    @contextmanager
    def hold(self, model_id: str) -> Iterator[LoadedModel]:
        """The loaded model, kept loaded until the block ends (a request or a session)."""
        model = self.acquire(model_id)
        try:
            yield model
        finally:
            self.release(model_id)

    def acquire(self, model_id: str) -> LoadedModel:
        """`load`, then hold the model until `release` (budget use counts)."""
        while True:
            model = self.load(model_id)
            with self._guard:  # it may have been unloaded between the two
                if self._loaded.get(model_id) is model:
                    self.budget.acquire(model_id)
                    return model

    def release(self, model_id: str) -> None:
        with self._guard:
            self.budget.release(model_id)

    def memory(self) -> tuple[int, int, int]:
        """The budget: (limit bytes, used bytes, models unloaded for room so far)."""
        with self._guard:
            return self.budget.limit, self.budget.used(), self.budget.unloads

    def load_seconds(self, model_id: str) -> float:
        """How long the model's last load here took; 0 when it never loaded."""
        with self._guard:
            return self._load_s.get(model_id, 0.0)

    def _make_room(self, model_id: str, size: int) -> None:
        """Unload what the budget says must go so `size` more bytes fit, and count the
        model in (raises ModelTooLarge or Unavailable when it cannot)."""
        with self._guard:
            victims = self.budget.victims(model_id, size)
            gone = [self._loaded.pop(v) for v in victims]
            for v in victims:
                self.budget.remove(v, evicted=True)
            self.budget.add(model_id, size)
        for v, model in zip(victims, gone, strict=True):
            log.info("unloading %s (least recently used) to make room for %s", v, model_id)
            model.engine.close()

    def encoder(self, model_id: str) -> PromptEncoder:
        """The model's prompt tokenization, exactly as Generate's: its loaded engine, else
        the engine's tokenizer alone (without loading the weights)."""
        loaded = self.get(model_id)
        if loaded is not None:
            return loaded.engine
        return _encoder(self._engine, self.store.path(model_id))

    def _load(self, model_id: str, progress: ProgressFn) -> LoadedModel:
        started = time.monotonic()
        manifest = self.store.ensure(model_id, progress)
        self._make_room(model_id, manifest.weights_bytes)
        try:
            model = self._load_engine(model_id, manifest, progress, started)
        except BaseException:
            with self._guard:
                self.budget.remove(model_id)
            raise
        return model

    def _load_engine(
        self, model_id: str, manifest: Manifest, progress: ProgressFn, started: float
    ) -> LoadedModel:
        try:
            progress(PHASE_LOAD, 0, 1)
            config = EngineConfig(self.store.path(model_id), self._device, self._kv, *self._batch)
            engine = engine_class(self._engine).load(config)
            progress(PHASE_LOAD, 1, 1)
            speeds = self._measure(engine, progress)
        except RecoverableError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            raise Unavailable(f"cannot load model {model_id!r}: {exc}") from exc
        took = time.monotonic() - started
        log.info(
            "loaded %s (%s) in %.1fs; prefill %.0f tok/s, decode %.1f tok/s",
            model_id,
            manifest.weights_cid,
            took,
            speeds.prefill_tokens_per_s,
            speeds.decode_tokens_per_s,
        )
        return LoadedModel(manifest, engine, speeds, took)

    def _measure(self, engine: Engine, progress: ProgressFn) -> Speeds:
        if not self._calibrate:
            return Speeds(0.0, 0.0)
        progress(PHASE_CALIBRATE, 0, 1)
        speeds = engine.calibrate()
        progress(PHASE_CALIBRATE, 1, 1)
        return speeds

    def unload(self, model_id: str) -> bool:
        self.store.known(model_id)
        with self._guard:
            model = self._loaded.pop(model_id, None)
            self.budget.remove(model_id)
        if model is None:
            return False
        model.engine.close()  # fails the requests it still runs
        return True

    def close(self) -> None:
        """Unload every model, as the backend stops: what an engine started (vLLM's
        engine core and its sockets) goes with the engine, not at the process's exit."""
        with self._guard:
            model_ids = list(self._loaded)
        for model_id in model_ids:
            try:
                self.unload(model_id)
            except Exception:  # noqa: BLE001 - the others are unloaded all the same
                log.exception("unloading %s as the backend stops failed", model_id)


@lru_cache(maxsize=4)
def _encoder(engine: str, model_dir: Path) -> PromptEncoder:
    return engine_class(engine).load_encoder(model_dir)


class RequestTracker:
    """Running requests by id, so Abort can reach them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def start(self, request_id: str) -> threading.Event:
        with self._lock:
            if request_id in self._running:
                raise InvalidRequest(f"request_id {request_id!r} is already running")
            event = threading.Event()
            self._running[request_id] = event
            return event

    def finish(self, request_id: str) -> None:
        with self._lock:
            self._running.pop(request_id, None)

    def abort(self, request_id: str) -> bool:
        with self._lock:
            event = self._running.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    def abort_all(self) -> None:
        with self._lock:
            events = list(self._running.values())
        for event in events:
            event.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)
