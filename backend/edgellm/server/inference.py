"""The Inference service: Generate (one response per token) and Abort."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence

import grpc

from edgellm.cluster.manager import ClusterManager
from edgellm.cluster.plan import Plan
from edgellm.engine.base import Engine
from edgellm.engine.types import GenerationChunk, GenerationRequest
from edgellm.errors import EdgeLLMError
from edgellm.server import messages
from edgellm.server.models import ModelManager, RequestTracker
from edgellm.server.status import abort
from edgellm.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)


class InferenceService(inference_pb2_grpc.InferenceServicer):
    def __init__(
        self, models: ModelManager, tracker: RequestTracker, clusters: ClusterManager
    ) -> None:
        self._models = models
        self._tracker = tracker
        self._clusters = clusters

    def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext):
        arrival = time.monotonic()
        try:
            req = messages.generation_request(request, arrival)
            resume = tuple(request.resume_token_ids)
            plan = messages.plan(request.plan) if request.HasField("plan") else None
            cancel = self._tracker.start(req.request_id)
        except EdgeLLMError as exc:
            abort(context, exc)
        # Fires when the RPC ends for any reason, including a client cancel or disconnect.
        context.add_callback(cancel.set)
        try:
            if plan is None:
                yield from self._stream(request.model, req, resume, cancel)
            else:
                yield from self._stream_plan(request.model, plan, req, resume, cancel)
        except GeneratorExit:  # the caller cancelled the RPC or went away mid-stream
            log.info("cancelled %s", req.request_id)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code
            if context.is_active():
                abort(context, exc)
            else:  # the caller left while the engine ran: it stopped at the next token
                log.info("cancelled %s", req.request_id)
        finally:
            self._tracker.finish(req.request_id)

    # Concurrent calls for one model (or one cluster's plan) are not serialised here: the
    # engine batches them (continuous batching), queueing what does not fit.

    def _stream(self, model_id: str, req: GenerationRequest, resume, cancel: threading.Event):
        # Loaded on demand, so one call is enough; held (never unloaded to make room for
        # another model) until the stream ends.
        with self._models.hold(model_id) as model:
            for chunk in start(model.engine, req, resume, cancel):
                yield messages.generate_response(req.request_id, chunk)

    def _stream_plan(self, model_id: str, plan: Plan, req: GenerationRequest, resume, cancel):
        """Generate across the cluster of `plan.session_id`; the tokenizer and config come
        from this backend's store, the layers from each peer's."""
        manifest = self._models.store.ensure(model_id)
        model_dir = self._models.store.path(model_id)
        engine = self._clusters.engine(plan, model_id, model_dir, manifest.num_layers)
        for chunk in start(engine, req, resume, cancel):
            yield messages.generate_response(req.request_id, chunk)

    def Abort(self, request: inference_pb2.AbortRequest, context: grpc.ServicerContext):
        aborted = self._tracker.abort(request.request_id)
        if aborted:
            log.info("abort %s", request.request_id)
        return inference_pb2.AbortResponse(aborted=aborted)


def start(
    engine: Engine, req: GenerationRequest, resume: Sequence[int], cancel: threading.Event
) -> Iterator[GenerationChunk]:
    """`engine.generate(req)`, or with `resume` (GenerateRequest.resume_token_ids) its
    continuation after a failover (Engine.resume). Eager: bad input raises InvalidRequest
    here, before the caller waits for the engine."""
    if resume:
        return engine.resume(req, resume, cancel)
    return engine.generate(req, cancel)
