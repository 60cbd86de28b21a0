"""Protobuf <-> engine types."""

from __future__ import annotations

import uuid

from edgellm.cluster.plan import Plan, PlanStage, StageRole
from edgellm.engine.layers import LayerRange
from edgellm.engine.types import (
    ChatMessage,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    SamplingParams,
)
from edgellm.models.manifest import Manifest
from edgellm.v1 import inference_pb2, model_control_pb2

_FINISH = {
    FinishReason.STOP: inference_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: inference_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP_STRING: inference_pb2.FINISH_REASON_STOP_STRING,
}


def sampling_params(msg: inference_pb2.SamplingParams) -> SamplingParams:
    return SamplingParams(
        max_tokens=msg.max_tokens if msg.HasField("max_tokens") else None,
        temperature=msg.temperature if msg.HasField("temperature") else 0.0,
        top_p=msg.top_p if msg.HasField("top_p") else 1.0,
        top_k=msg.top_k if msg.HasField("top_k") else 0,
        seed=msg.seed if msg.HasField("seed") else None,
        stop=tuple(msg.stop),
    )


def generation_request(msg: inference_pb2.GenerateRequest, arrival: float) -> GenerationRequest:
    which = msg.WhichOneof("input")
    messages = None
    if which == "messages":
        messages = tuple(ChatMessage(m.role, m.content) for m in msg.messages.messages)
    return GenerationRequest(
        request_id=msg.request_id or uuid.uuid4().hex,
        prompt=msg.prompt if which == "prompt" else None,
        messages=messages,
        raw_prompt=msg.raw_prompt if which == "raw_prompt" else None,
        sampling=sampling_params(msg.sampling),
        arrival_time=arrival,
        no_prefix_cache=msg.no_prefix_cache,
        kv_manifest=bytes(msg.kv_manifest),
    )


def plan(msg: inference_pb2.Plan) -> Plan:
    """The plan as sent; Plan.validate checks it against the model before anything runs."""
    stages = tuple(
        PlanStage(
            s.peer_resource, LayerRange(s.layer_start, s.layer_end), s.weights_cid, _role(s.role)
        )
        for s in msg.stages
    )
    return Plan(msg.session_id, stages)


def _role(value: int) -> StageRole | int:
    """The stage's role; an unknown number stays a number, which Plan.validate refuses."""
    try:
        return StageRole(value)
    except ValueError:
        return value


def generate_response(request_id: str, chunk: GenerationChunk) -> inference_pb2.GenerateResponse:
    out = inference_pb2.GenerateResponse(
        request_id=request_id,
        text=chunk.text,
        token_ids=chunk.token_ids,
        dropped_kv_holders=chunk.dropped_kv_holders,
        dropped_workers=chunk.dropped_workers,
    )
    if chunk.finish_reason is not None:
        out.finish_reason = _FINISH[chunk.finish_reason]
    if chunk.usage is not None:
        out.usage.prompt_tokens = chunk.usage.prompt_tokens
        out.usage.completion_tokens = chunk.usage.completion_tokens
        out.usage.cached_prompt_tokens = chunk.usage.cached_prompt_tokens
    if chunk.timings is not None:
        t = chunk.timings
        out.timings.ttft_ms = t.ttft_ms
        out.timings.decode_tokens_per_s = t.decode_tokens_per_s
        out.timings.prefill_tokens_per_s = t.prefill_tokens_per_s
        out.timings.total_ms = t.total_ms
        out.timings.kv_fetch_ms = t.kv_fetch_ms
        out.timings.kv_store_ms = t.kv_store_ms
        out.timings.max_batch = t.max_batch
    return out


def model_info(
    model_id: str, description: str, manifest: Manifest | None, loaded: bool
) -> model_control_pb2.ModelInfo:
    """`description`: the registry's line for a known model, else the manifest's source."""
    if not description and manifest is not None:
        description = manifest.source
    info = model_control_pb2.ModelInfo(id=model_id, description=description, loaded=loaded)
    if manifest is not None:
        info.in_store = True
        info.weights_cid = manifest.weights_cid
        info.architecture = manifest.architecture
        info.num_layers = manifest.num_layers
        info.hidden_size = manifest.hidden_size
        info.context_length = manifest.context_length
        info.dtype = manifest.dtype
        info.weights_bytes = manifest.weights_bytes
    return info
