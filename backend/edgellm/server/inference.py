"""The Inference service: Generate (one response per token) and Abort."""

from __future__ import annotations

import logging
import threading
import time

import grpc

from edgellm.engine.types import GenerationRequest
from edgellm.errors import EdgeLLMError, RequestCancelled
from edgellm.server import messages
from edgellm.server.models import ModelManager, RequestTracker, wait_for
from edgellm.server.status import abort
from edgellm.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(self, models: ModelManager, tracker: RequestTracker) -> None:
        self._models = models
        self._tracker = tracker

    def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext):
        arrival = time.monotonic()
        try:
            req = messages.generation_request(request, arrival)
            cancel = self._tracker.start(req.request_id)
        except EdgeLLMError as exc:
            abort(context, exc)
        # Fires when the RPC ends for any reason, including a client cancel or disconnect.
        context.add_callback(cancel.set)
        try:
            yield from self._stream(request.model, req, cancel)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code
            if context.is_active():
                abort(context, exc)
        finally:
            self._tracker.finish(req.request_id)

    def _stream(self, model_id: str, req: GenerationRequest, cancel: threading.Event):
        model = self._models.load(model_id)  # on demand, so one call is enough
        chunks = model.engine.generate(req, cancel)

        def cancelled() -> None:
            raise RequestCancelled(f"request {req.request_id} was aborted")

        wait_for(model.busy, cancel, cancelled)
        try:
            for chunk in chunks:
                yield messages.generate_response(req.request_id, chunk)
        finally:
            model.busy.release()

    def Abort(self, request: inference_pb2.AbortRequest, context: grpc.ServicerContext):
        aborted = self._tracker.abort(request.request_id)
        if aborted:
            log.info("abort %s", request.request_id)
        return inference_pb2.AbortResponse(aborted=aborted)
