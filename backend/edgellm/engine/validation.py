"""Request checks shared by engines; each failure names the limit and the value it got."""

from __future__ import annotations

from collections.abc import Sequence

from edgellm.engine.types import GenerationRequest, SamplingParams
from edgellm.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 256
ROLES = ("system", "user", "assistant")


def check_input(request: GenerationRequest) -> None:
    given = [x is not None for x in (request.prompt, request.messages, request.raw_prompt)]
    if sum(given) != 1:
        raise InvalidRequest("exactly one of prompt, messages or raw_prompt must be set")
    if request.messages is not None:
        if not request.messages:
            raise InvalidRequest("messages must not be empty")
        for i, message in enumerate(request.messages):
            if message.role not in ROLES:
                raise InvalidRequest(
                    f"messages[{i}].role must be one of {', '.join(ROLES)}, got {message.role!r}"
                )
        if not any(m.content.strip() for m in request.messages):
            raise InvalidRequest("messages must contain some non-whitespace content")
        return
    text = request.prompt if request.prompt is not None else request.raw_prompt
    if not text or not text.strip():
        raise InvalidRequest("prompt must not be empty or whitespace")


def check_sampling(params: SamplingParams) -> None:
    if not 0.0 <= params.temperature <= 2.0:
        raise InvalidRequest(f"temperature must be between 0 and 2, got {params.temperature:g}")
    if not 0.0 < params.top_p <= 1.0:
        raise InvalidRequest(f"top_p must be in (0, 1], got {params.top_p:g}")
    if params.top_k < 0:
        raise InvalidRequest(f"top_k must be 0 (disabled) or positive, got {params.top_k}")
    if params.seed is not None and not 0 <= params.seed < 2**64:
        raise InvalidRequest(f"seed must be an unsigned 64-bit integer, got {params.seed}")
    for i, stop in enumerate(params.stop):
        if not stop:
            raise InvalidRequest(f"stop[{i}] must not be an empty string")


def resolve_max_tokens(params: SamplingParams, prompt_tokens: int, context_length: int) -> int:
    """The completion budget for a prompt of `prompt_tokens` in a `context_length` window."""
    room = context_length - prompt_tokens
    if room < 1:
        raise InvalidRequest(
            f"prompt is {prompt_tokens} tokens; the context window of {context_length} tokens "
            f"leaves no room to generate (at most {context_length - 1} prompt tokens)"
        )
    if params.max_tokens is None:
        return min(DEFAULT_MAX_TOKENS, room)
    if not 1 <= params.max_tokens <= room:
        raise InvalidRequest(
            f"max_tokens must be between 1 and {room} for this prompt, got {params.max_tokens}"
        )
    return params.max_tokens


def check_resume(resume_ids: Sequence[int], vocab_size: int) -> None:
    """Tokens a failed-over generation already produced must be real token ids."""
    for i, token in enumerate(resume_ids):
        if not 0 <= token < vocab_size:
            raise InvalidRequest(
                f"resume_token_ids[{i}] is {token}, outside the vocabulary of {vocab_size} tokens"
            )


def resume_budget(max_tokens: int, resumed: int) -> int:
    """Tokens still to generate when `resumed` of the `max_tokens` budget were produced
    before a failover (they count against it); 0 means the answer is already complete."""
    return max(max_tokens - resumed, 0)
