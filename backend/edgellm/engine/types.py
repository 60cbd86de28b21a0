"""Engine-neutral request and output types."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FinishReason(enum.Enum):
    STOP = "stop"  # the model emitted an end-of-sequence token
    LENGTH = "length"  # max_tokens reached
    STOP_STRING = "stop_string"  # a stop string was produced


@dataclass(frozen=True)
class SamplingParams:
    # Tokens to generate at most; None means min(256, room left in the context window).
    max_tokens: int | None = None
    # 0 is greedy; range [0, 2].
    temperature: float = 0.0
    # Nucleus mass, range (0, 1].
    top_p: float = 1.0
    # Keep the k most likely tokens; 0 disables.
    top_k: int = 0
    # Seed for sampling; None draws a random one.
    seed: int | None = None
    # Generation stops before the first occurrence of any of these.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    # Exactly one of the three inputs is set.
    prompt: str | None = None  # one user turn, chat template applied
    messages: tuple[ChatMessage, ...] | None = None  # a conversation, chat template applied
    raw_prompt: str | None = None  # raw text, no template
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # time.monotonic() when the request arrived; TTFT counts from here (None: from generate).
    arrival_time: float | None = None
    # Skip the prefix-cache lookup and prefill the whole prompt (the prompt's blocks are
    # still stored); benchmarks use it for the full-prefill baseline.
    no_prefix_cache: bool = False
    # A KV manifest (edgellm.kv.manifest) of blocks other peers hold; b"" for none.
    kv_manifest: bytes = b""


@dataclass(frozen=True)
class PreparedRequest:
    """A request validated and tokenized by `Engine.prepare`, ready for `Engine.run`."""

    request_id: str
    prompt_ids: tuple[int, ...]
    # The completion budget, resolved against the context window.
    max_tokens: int
    sampling: SamplingParams
    start: float  # time.monotonic() at arrival; TTFT counts from here
    no_prefix_cache: bool = False  # skip the prefix-cache lookup
    kv_manifest: bytes = b""  # blocks other peers hold (edgellm.kv.manifest)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens whose KV came from cached blocks instead of being computed.
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    ttft_ms: float  # request start to first token produced
    prefill_tokens_per_s: float  # prompt tokens over prefill time
    decode_tokens_per_s: float  # tokens after the first over the time they took
    total_ms: float
    # Prefix-cache lookup, fetch, verification and import of KV blocks, before the prefill.
    kv_fetch_ms: float = 0.0
    # Storing the prompt's new KV blocks (overlaps decoding).
    kv_store_ms: float = 0.0
    # The most sequences one of its decode steps ran with (continuous batching); 0: the
    # engine does not say.
    max_batch: int = 0


@dataclass(frozen=True)
class GenerationChunk:
    """Output for one decoded token; the last chunk of a request has finish_reason set."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
    # IPFS peer ids of KV block holders this request's spot check dropped (kv/spot.py),
    # for the node to stop asking them: on the first token's chunk for a cached prefix,
    # on the last for a P/D handoff.
    dropped_kv_holders: tuple[str, ...] = ()
    # On the last chunk: peer ids of the cluster's workers whose handed-over blocks
    # failed the check (a P/D prefill peer), for the requester to plan without them.
    dropped_workers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Speeds:
    """Throughput measured on this machine for one model."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
