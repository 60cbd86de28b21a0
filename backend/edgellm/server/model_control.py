"""The ModelControl service: LoadModel (streamed progress), UnloadModel, ListModels, Status.

The node's control of the backend is three small services, each with what it needs:
models and device here, Ray clusters in cluster.py, KV blocks in kv.py."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc

from edgellm.errors import EdgeLLMError
from edgellm.server import messages
from edgellm.server.models import LoadedModel, ModelManager, RequestTracker
from edgellm.server.status import abort, device_name, memory
from edgellm.v1 import model_control_pb2, model_control_pb2_grpc
from edgellm.version import backend_version

PROGRESS_INTERVAL_S = 0.2  # at most this often per phase, besides phase starts and ends


class _ProgressQueue:
    """Progress from the loading thread to the RPC thread, thinned out."""

    def __init__(self) -> None:
        self.items: queue.Queue = queue.Queue()
        self._phase = ""
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        boundary = phase != self._phase or done in (0, total)
        if boundary or now - self._last >= PROGRESS_INTERVAL_S:
            self._phase, self._last = phase, now
            self.items.put(model_control_pb2.LoadModelProgress(phase=phase, done=done, total=total))


class ModelControl(model_control_pb2_grpc.ModelControlServicer):
    def __init__(self, models: ModelManager, tracker: RequestTracker, device: str) -> None:
        self._models = models
        self._tracker = tracker
        self._device = device

    def _info(
        self, model_id: str, loaded: LoadedModel | None = None
    ) -> model_control_pb2.ModelInfo:
        store = self._models.store
        store.known(model_id)
        description = store.registry.get(model_id).description if model_id in store.registry else ""
        loaded = loaded or self._models.get(model_id)
        manifest = loaded.manifest if loaded else store.manifest(model_id)
        info = messages.model_info(model_id, description, manifest, loaded is not None)
        info.load_ms = round(self._models.load_seconds(model_id) * 1000)
        return info

    def LoadModel(self, request, context: grpc.ServicerContext) -> Iterator:
        progress = _ProgressQueue()
        result: dict = {}

        def work() -> None:
            try:
                result["model"] = self._models.load(request.model, progress)
            except Exception as exc:  # noqa: BLE001 - handed to the RPC thread
                result["error"] = exc
            finally:
                progress.items.put(None)

        threading.Thread(target=work, name=f"load-{request.model}", daemon=True).start()
        while (item := progress.items.get()) is not None:
            if context.is_active():
                yield item
        if "error" in result:
            abort(context, result["error"])
        info = self._info(request.model, result["model"])
        yield model_control_pb2.LoadModelProgress(phase="ready", done=1, total=1, model=info)

    def UnloadModel(self, request, context: grpc.ServicerContext):
        try:
            self._models.unload(request.model)
        except EdgeLLMError as exc:
            abort(context, exc)
        return model_control_pb2.UnloadModelResponse()

    def ListModels(self, request, context: grpc.ServicerContext):
        ids = self._models.store.ids()
        return model_control_pb2.ListModelsResponse(models=[self._info(i) for i in ids])

    def Status(self, request, context: grpc.ServicerContext):
        total, free = memory(self._device)
        loaded = self._models.loaded()
        measured = [m.speeds for m in loaded if m.speeds.decode_tokens_per_s > 0]
        return model_control_pb2.StatusResponse(
            backend_version=backend_version(),
            device=device_name(self._device),
            engine=self._models.engine,
            memory_total_bytes=total,
            memory_free_bytes=free,
            # The most recently loaded model's figures; one model per backend is the norm.
            prefill_tokens_per_s=measured[-1].prefill_tokens_per_s if measured else 0.0,
            decode_tokens_per_s=measured[-1].decode_tokens_per_s if measured else 0.0,
            active_requests=len(self._tracker),
            loaded_models=[self._info(m.manifest.id, m) for m in loaded],
            **self._budget(),
        )

    def _budget(self) -> dict[str, int]:
        limit, used, unloads = self._models.memory()
        return {
            "model_memory_budget_bytes": limit,
            "model_memory_used_bytes": used,
            "model_unloads": unloads,
        }
