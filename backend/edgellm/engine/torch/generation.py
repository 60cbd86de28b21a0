"""One sequence's generation: prefill, then one token per decode step until EOS, a stop
string or the budget. The batcher (batcher.py) runs the decode steps of many at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from edgellm.engine.runner import PrefixLoading, RunnerSession, StageRunner
from edgellm.engine.torch.sampler import Sampler
from edgellm.engine.torch.text import Detokenizer, StopMatcher, advance_text, drain_text
from edgellm.engine.types import FinishReason, GenerationChunk, PreparedRequest, Timings, Usage
from edgellm.kv.prefix import PrefixCache, PrefixHit, StoreJob

log = logging.getLogger(__name__)


class _Clock:
    def __init__(self, start: float, prompt_tokens: int) -> None:
        self.start = start
        self.prompt_tokens = prompt_tokens
        self.prefill_start = time.monotonic()
        self.first_token: float | None = None

    def timings(
        self, completion_tokens: int, fetch_ms: float, store_ms: float, max_batch: int
    ) -> Timings:
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
            max_batch=max_batch,
        )


class Sequence:
    """One request in the batch: its runner session, sampler, detokenizer and stop
    strings. The batcher calls `start` (prefix cache, prefill, first token), then feeds
    the logits of each decode step to `advance` until `finished`; `close` frees the
    session (its pool slots) at once."""

    def __init__(
        self,
        runner: StageRunner,
        tokenizer,
        eos_ids: frozenset[int],
        job: PreparedRequest,
        prefix: PrefixCache | None = None,
    ) -> None:
        self.runner, self.job, self.prefix, self.eos_ids = runner, job, prefix, eos_ids
        self.positions = len(job.prompt_ids) + job.max_tokens
        self.session: RunnerSession | None = None
        self.hit = PrefixHit()
        self.clock = _Clock(job.start, len(job.prompt_ids))
        self.detok = Detokenizer(tokenizer, job.prompt_ids)
        self.stops = StopMatcher(job.sampling.stop)
        self.sampler = Sampler(job.sampling, runner.device)
        self.store: StoreJob | None = None
        self.produced = 0
        # The most sequences a decode step of this one ran with (the batcher sets it).
        self.max_batch = 1
        self.token = -1  # the last sampled token, the next step's input
        self.finished = False

    def start(self) -> Chunk:
        """Open the session, take the prompt's cached prefix (local stages only), prefill
        the rest and sample the first token."""
        self.clock.prefill_start = time.monotonic()
        self.session = self.runner.session(self.positions)
        job, prefix = self.job, self.prefix
        if prefix is not None and not job.no_prefix_cache:
            try:
                self.hit = prefix.load(self.session.sessions, job.prompt_ids, job.kv_manifest)
            except Exception as exc:  # noqa: BLE001 - a peer's manifest or blocks must not fail us
                log.warning("kv: prefix cache lookup failed, computing the whole prompt: %r", exc)
                self.session.close()
                self.session = self.runner.session(self.positions)
                self.hit = PrefixHit()
        elif not job.no_prefix_cache and isinstance(self.session, PrefixLoading):
            # Ray stages: each takes its layers' cached blocks itself (cluster.stage_prefix).
            tokens, ms = self.session.load_prefix(job.prompt_ids, job.kv_manifest)
            self.hit = PrefixHit(tokens, ms)
            if tokens:
                logits, dropped = self.session.prefill_cached()
                if logits is None:
                    self.hit = PrefixHit(fetch_ms=ms, dropped=dropped)
                else:
                    return self.advance(logits)
        logits, check = None, self.hit.spot
        if prefix is not None and check is not None:
            # The rest of the prompt with the spot check folded in (kv/spot.py); None when
            # it failed and the sessions were emptied.
            sessions = self.session.sessions
            logits, self.hit = prefix.prefill(sessions, job.prompt_ids, self.hit, check)
        if logits is None:
            rest = torch.tensor([job.prompt_ids[self.hit.tokens :]], device=self.runner.device)
            logits = self.session.forward(rest)
        return self.advance(logits)

    def advance(self, logits: torch.Tensor) -> Chunk:
        """Sample from float32 logits [1, vocab]; the chunk for the token (a callable
        giving the last chunk once the prompt's blocks are stored, when it ends here)."""
        token = self.sampler(logits)
        self.produced += 1
        if self.clock.first_token is None:
            self.clock.first_token = time.monotonic()
            self.store = _store(self.prefix, self.session, self.job, self.hit)
        finish, text = advance_text(token, self.eos_ids, self.detok, self.stops)
        if finish is None and self.produced >= self.job.max_tokens:
            finish, tail = drain_text(self.detok, self.stops, FinishReason.LENGTH)
            text += tail
        self.token = token
        dropped = self.hit.dropped if self.produced == 1 else ()
        if finish is None:
            return GenerationChunk(text, (token,), dropped_kv_holders=dropped)
        self.finished = True
        if self.store is not None:
            self.store.finish(harmless=True)  # the fetched blocks served a whole request
        # One of the two is all zeros: a prefix cache serves in-process stages only.
        taken = self.session.kv_stats()
        dropped += tuple(d for d in taken.dropped if d not in dropped)  # P/D: the prefill peer
        store, hit, clock, produced = self.store, self.hit, self.clock, self.produced
        max_batch = self.max_batch
        usage = Usage(len(self.job.prompt_ids), produced, hit.tokens + taken.cached_tokens)

        def last() -> GenerationChunk:
            store_ms = store.wait() if store is not None else 0.0
            timings = clock.timings(
                produced, hit.fetch_ms + taken.fetch_ms, store_ms + taken.store_ms, max_batch
            )
            return GenerationChunk(
                text, (token,), finish, usage, timings, dropped, taken.dropped_workers
            )

        return last

    def close(self) -> None:
        if self.store is not None and not self.finished:
            # Failed, cancelled or abandoned: the blocks it fetched stay unadopted.
            self.store.finish(harmless=False)
        if self.session is not None:
            self.session.close()
            self.session = None


# A token's chunk, or for the last token a callable that waits for the prompt's blocks to
# be stored and returns the last chunk (called by the request's own thread, so storing
# never holds up the batch).
Chunk = GenerationChunk | Callable[[], GenerationChunk]


def _store(prefix: PrefixCache | None, session, job: PreparedRequest, hit: PrefixHit) -> StoreJob:
    if prefix is None:
        return StoreJob()
    try:
        return prefix.store_async(session.sessions, job.prompt_ids, hit)
    except RuntimeError as exc:  # no memory to copy the K/V out, or no thread to store them
        log.warning("kv: cannot store the prompt's blocks: %r", exc)
        return StoreJob()
