"""The decode loop: prefill, then one token at a time until EOS, a stop string or the budget."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import torch

from edgellm.engine.runner import PrefixLoading, RunnerSession, StageRunner
from edgellm.engine.torch.sampler import Sampler
from edgellm.engine.torch.text import Detokenizer, StopMatcher
from edgellm.engine.types import FinishReason, GenerationChunk, PreparedRequest, Timings, Usage
from edgellm.errors import RequestCancelled
from edgellm.kv.prefix import PrefixCache, PrefixHit, StoreJob

log = logging.getLogger(__name__)


class _Clock:
    def __init__(self, start: float, prompt_tokens: int) -> None:
        self.start = start
        self.prompt_tokens = prompt_tokens
        self.prefill_start = time.monotonic()
        self.first_token: float | None = None

    def timings(self, completion_tokens: int, fetch_ms: float, store_ms: float) -> Timings:
        now = time.monotonic()
        first = self.first_token or now
        prefill_s = first - self.prefill_start
        decode_s = now - first
        return Timings(
            ttft_ms=(first - self.start) * 1000.0,
            prefill_tokens_per_s=self.prompt_tokens / prefill_s if prefill_s > 0 else 0.0,
            decode_tokens_per_s=(completion_tokens - 1) / decode_s if decode_s > 0 else 0.0,
            total_ms=(now - self.start) * 1000.0,
            kv_fetch_ms=fetch_ms,
            kv_store_ms=store_ms,
        )


def run(
    pipeline: StageRunner,
    tokenizer,
    eos_ids: frozenset[int],
    job: PreparedRequest,
    cancel: threading.Event | None = None,
    prefix: PrefixCache | None = None,
) -> Iterator[GenerationChunk]:
    """Yield one chunk per generated token; the last one carries finish, usage and timings.

    With a prefix cache (local stages only), the prompt's cached leading blocks are
    fetched instead of computed, and its new blocks are stored while decoding goes on.
    What the runner's own stages took over (P/D's handoff) comes from its session."""
    positions = len(job.prompt_ids) + job.max_tokens
    session = pipeline.session(positions)
    try:
        hit = PrefixHit()
        if prefix is not None and not job.no_prefix_cache:
            try:
                hit = prefix.load(session.sessions, job.prompt_ids, job.kv_manifest)
            except Exception as exc:  # noqa: BLE001 - a peer's manifest or blocks must not fail us
                log.warning("kv: prefix cache lookup failed, computing the whole prompt: %r", exc)
                session.close()
                session = pipeline.session(positions)
                hit = PrefixHit()
        elif not job.no_prefix_cache and isinstance(session, PrefixLoading):
            tokens, ms = session.load_prefix(job.prompt_ids, job.kv_manifest)
            hit = PrefixHit(tokens, ms)
        yield from _decode(session, pipeline.device, tokenizer, eos_ids, job, cancel, prefix, hit)
    finally:
        session.close()


def _store(prefix: PrefixCache | None, session, job: PreparedRequest, hit: PrefixHit) -> StoreJob:
    if prefix is None:
        return StoreJob()
    try:
        return prefix.store_async(session.sessions, job.prompt_ids, hit)
    except RuntimeError as exc:  # no memory to copy the K/V out, or no thread to store them
        log.warning("kv: cannot store the prompt's blocks: %r", exc)
        return StoreJob()


def _decode(
    session: RunnerSession,
    device: torch.device,
    tokenizer,
    eos_ids: frozenset[int],
    job: PreparedRequest,
    cancel: threading.Event | None,
    prefix: PrefixCache | None,
    hit: PrefixHit,
) -> Iterator[GenerationChunk]:
    prompt_tokens = len(job.prompt_ids)
    clock = _Clock(job.start, prompt_tokens)
    detok = Detokenizer(tokenizer, job.prompt_ids)
    stops = StopMatcher(job.sampling.stop)
    sampler = Sampler(job.sampling, device)
    step = torch.empty((1, 1), dtype=torch.long, device=device)
    logits = session.forward(torch.tensor([job.prompt_ids[hit.tokens :]], device=device))
    store: StoreJob | None = None
    produced = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise RequestCancelled(f"request {job.request_id} was aborted")
        token = sampler(logits)
        produced += 1
        if clock.first_token is None:
            clock.first_token = time.monotonic()
            store = _store(prefix, session, job, hit)
        finish, text = _advance(token, eos_ids, detok, stops)
        if finish is None and produced >= job.max_tokens:
            finish, tail = _drain(detok, stops, FinishReason.LENGTH)
            text += tail
        if finish is not None:
            store_ms = store.wait() if store is not None else 0.0
            # One of the two is all zeros: a prefix cache serves in-process stages only.
            taken = session.kv_stats()
            usage = Usage(prompt_tokens, produced, hit.tokens + taken.cached_tokens)
            timings = clock.timings(
                produced, hit.fetch_ms + taken.fetch_ms, store_ms + taken.store_ms
            )
            yield GenerationChunk(text, (token,), finish, usage, timings)
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
