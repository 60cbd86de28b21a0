"""The decode loop: prefill, then one token at a time until EOS, a stop string or the budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from edgellm.engine.runner import RunnerSession, StageRunner
from edgellm.engine.torch.sampler import Sampler
from edgellm.engine.torch.text import Detokenizer, StopMatcher
from edgellm.engine.types import FinishReason, GenerationChunk, Timings, Usage
from edgellm.errors import RequestCancelled


@dataclass(frozen=True)
class Job:
    """A validated request, ready to run."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    sampler: Sampler
    stops: tuple[str, ...]
    start: float  # time.monotonic() at arrival


class _Clock:
    def __init__(self, start: float, prompt_tokens: int) -> None:
        self.start = start
        self.prompt_tokens = prompt_tokens
        self.prefill_start = time.monotonic()
        self.first_token: float | None = None

    def timings(self, completion_tokens: int) -> Timings:
        now = time.monotonic()
        first = self.first_token or now
        prefill_s = first - self.prefill_start
        decode_s = now - first
        return Timings(
            ttft_ms=(first - self.start) * 1000.0,
            prefill_tokens_per_s=self.prompt_tokens / prefill_s if prefill_s > 0 else 0.0,
            decode_tokens_per_s=(completion_tokens - 1) / decode_s if decode_s > 0 else 0.0,
            total_ms=(now - self.start) * 1000.0,
        )


def run(
    pipeline: StageRunner,
    tokenizer,
    eos_ids: frozenset[int],
    job: Job,
    cancel: threading.Event | None = None,
) -> Iterator[GenerationChunk]:
    """Yield one chunk per generated token; the last one carries finish, usage and timings."""
    session = pipeline.session(len(job.prompt_ids) + job.max_tokens)
    try:
        yield from _decode(session, pipeline.device, tokenizer, eos_ids, job, cancel)
    finally:
        session.close()


def _decode(
    session: RunnerSession,
    device: torch.device,
    tokenizer,
    eos_ids: frozenset[int],
    job: Job,
    cancel: threading.Event | None,
) -> Iterator[GenerationChunk]:
    prompt_tokens = len(job.prompt_ids)
    clock = _Clock(job.start, prompt_tokens)
    detok = Detokenizer(tokenizer, job.prompt_ids)
    stops = StopMatcher(job.stops)
    step = torch.empty((1, 1), dtype=torch.long, device=device)
    logits = session.forward(torch.tensor([job.prompt_ids], device=device))
    produced = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise RequestCancelled(f"request {job.request_id} was aborted")
        token = job.sampler(logits)
        produced += 1
        if clock.first_token is None:
            clock.first_token = time.monotonic()
        finish, text = _advance(token, eos_ids, detok, stops)
        if finish is None and produced >= job.max_tokens:
            finish, tail = _drain(detok, stops, FinishReason.LENGTH)
            text += tail
        if finish is not None:
            usage = Usage(prompt_tokens, produced)
            yield GenerationChunk(text, (token,), finish, usage, clock.timings(produced))
            return
        yield GenerationChunk(text, (token,))
        step.fill_(token)
        logits = session.forward(step)


def _advance(
    token: int, eos_ids: frozenset[int], detok: Detokenizer, stops: StopMatcher
) -> tuple[FinishReason | None, str]:
    """Text made final by `token`, and the finish reason if it ends the generation."""
    if token in eos_ids:
        return _drain(detok, stops, FinishReason.STOP)
    text, hit = stops.feed(detok.add(token))
    return (FinishReason.STOP_STRING if hit else None), text


def _drain(
    detok: Detokenizer, stops: StopMatcher, reason: FinishReason
) -> tuple[FinishReason, str]:
    """Release held-back text at the end; a stop string in it still wins."""
    text, hit = stops.feed(detok.flush())
    if hit:
        return FinishReason.STOP_STRING, text
    return reason, text + stops.flush()
