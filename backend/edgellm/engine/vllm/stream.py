"""One request's vLLM output stream, read from a gRPC server thread.

A coroutine on the engine's loop thread pumps vLLM's RequestOutputs into a queue; the
reader turns the token ids into chunks with the torch engine's Detokenizer and
StopMatcher (vLLM's detokenizer is off), so text, stop strings and finish reasons are
exactly the torch engine's. Leaving the stream early (stop string, cancel, a closed RPC)
aborts the request in vLLM, so its sequence leaves the batch at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from edgellm.engine.torch.text import Detokenizer, StopMatcher, advance_text, drain_text
from edgellm.engine.types import FinishReason, GenerationChunk, PreparedRequest, Timings, Usage
from edgellm.engine.vllm.loop import LoopThread
from edgellm.errors import FatalError, RequestCancelled, Unavailable

_END = object()
# How often a reader waiting for the next output looks at its cancel event.
_POLL_S = 0.05


class EngineDead(FatalError):
    """vLLM's engine core process died; the backend exits so its supervisor restarts it."""


def sampling_params(
    prepared: PreparedRequest | None,
    eos_ids: frozenset[int],
    max_tokens: int | None = None,
    extra_args: dict | None = None,
):
    """vLLM's SamplingParams for a prepared request (None: greedy, EOS ignored);
    `extra_args` carries the KV connector's parameters (prefix.PrefixRun.params)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    common = {
        "detokenize": False,
        "output_kind": RequestOutputKind.DELTA,
        "extra_args": extra_args or None,
    }
    if prepared is None:
        return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, **common)
    s = prepared.sampling
    return SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,  # 0 disables, as ours
        seed=s.seed,
        max_tokens=prepared.max_tokens,
        # The generation config's EOS ids, as the torch engine stops on.
        stop_token_ids=sorted(eos_ids),
        **common,
    )


class Stream:
    def __init__(self, llm, loop: LoopThread, vllm_id: str) -> None:
        self._llm = llm
        self._loop = loop
        self._id = vllm_id
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Event()

    def start(self, prompt_ids: tuple[int, ...], params, cache_salt: str | None = None) -> None:
        """Submit the request; a `cache_salt` keeps its blocks out of vLLM's prefix cache
        for every request without the same salt."""
        from vllm.inputs import TokensPrompt

        if self._llm.errored:
            raise EngineDead("vLLM's engine core is dead; the backend restarts")
        prompt = TokensPrompt(prompt_token_ids=list(prompt_ids))
        if cache_salt is not None:
            prompt["cache_salt"] = cache_salt
        self._loop.submit(self._pump(prompt, params))

    async def _pump(self, prompt, params) -> None:
        try:
            async for output in self._llm.generate(prompt, params, self._id):
                self._queue.put(output)
            self._queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            self._queue.put(exc)
        finally:
            self._done.set()

    def outputs(self, cancel: threading.Event | None) -> Iterator:
        """vLLM's RequestOutputs until the request finishes."""
        from vllm.v1.engine.exceptions import EngineDeadError

        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    raise RequestCancelled("request was aborted") from None
                continue
            if item is _END:
                return
            if isinstance(item, EngineDeadError) or self._llm.errored:
                raise EngineDead(f"vLLM's engine core died ({item!r}); the backend restarts")
            if isinstance(item, BaseException):
                raise Unavailable(f"vLLM failed the request: {item!r}") from item
            yield item

    def chunks(
        self,
        tokenizer,
        eos_ids: frozenset[int],
        job: PreparedRequest,
        cancel: threading.Event | None,
        on_first: Callable[[], None] | None = None,
    ) -> Iterator[GenerationChunk]:
        """One chunk per generated token; the last carries finish, usage and timings.
        `on_first` runs once the first output is in, before anything is yielded (what it
        raises ends the stream with nothing streamed)."""
        detok = Detokenizer(tokenizer, job.prompt_ids)
        stops = StopMatcher(job.sampling.stop)
        prefill_start = time.monotonic()
        first: float | None = None
        produced = cached = 0
        try:
            for output in self.outputs(cancel):
                if on_first is not None:
                    on_first()
                    on_first = None
                cached = output.num_cached_tokens or cached
                for token in output.outputs[0].token_ids:
                    if cancel is not None and cancel.is_set():
                        raise RequestCancelled(f"request {job.request_id} was aborted")
                    produced += 1
                    first = first or time.monotonic()
                    finish, text = advance_text(token, eos_ids, detok, stops)
                    if finish is None and produced >= job.max_tokens:
                        finish, tail = drain_text(detok, stops, FinishReason.LENGTH)
                        text += tail
                    if finish is not None:
                        usage = Usage(len(job.prompt_ids), produced, cached)
                        timings = _timings(job, prefill_start, first, produced)
                        yield GenerationChunk(text, (token,), finish, usage, timings)
                        return
                    yield GenerationChunk(text, (token,))
        except RequestCancelled as exc:
            raise RequestCancelled(f"request {job.request_id} was aborted") from exc
        raise Unavailable(f"vLLM ended request {job.request_id} without a finish reason")

    def close(self) -> None:
        """Abort the request in vLLM unless it has finished (idempotent)."""
        if not self._done.is_set():
            self._loop.submit(self._llm.abort(self._id))


def _timings(job: PreparedRequest, prefill_start: float, first: float, produced: int) -> Timings:
    now = time.monotonic()
    prefill_s, decode_s = first - prefill_start, now - first
    return Timings(
        ttft_ms=(first - job.start) * 1000.0,
        prefill_tokens_per_s=len(job.prompt_ids) / prefill_s if prefill_s > 0 else 0.0,
        decode_tokens_per_s=(produced - 1) / decode_s if decode_s > 0 else 0.0,
        total_ms=(now - job.start) * 1000.0,
    )
