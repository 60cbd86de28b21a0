"""VllmEngine: the Engine interface over vLLM's async engine (AsyncLLM), whole models only.

vLLM batches every running request itself (continuous batching), so this engine takes
concurrent `run`s, up to `backend.max_batch` at once (vLLM's max_num_seqs; more wait in
vLLM's own queue), in `backend.kv_budget_mb` of KV cache on CPU. Prompts go in as token ids
from the same chat template as the torch engine's, and vLLM's own detokenizer is off: the
text, stop strings and finish reasons come from the torch engine's Detokenizer and
StopMatcher, so both engines answer a request with the same tokens, text and usage. Splits
across peers are refused (`over`): vLLM's CPU build cannot run its pipeline parallelism (see
docs/architecture.md), and the GPU path is not built yet.

vLLM's engine core is a separate process, spawned (not forked: the gRPC server's threads
must not be copied), so the program's entry point needs the `__main__` guard.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from edgellm.engine.base import EngineConfig
from edgellm.engine.runner import StageRunner
from edgellm.engine.tokenized import ModelText, TokenizedEngine
from edgellm.engine.types import GenerationChunk, PreparedRequest, Speeds
from edgellm.engine.vllm.loop import LoopThread
from edgellm.engine.vllm.stream import Stream, sampling_params
from edgellm.errors import InvalidRequest, Unavailable

# Seconds to wait for the engine core to start and load the model.
LOAD_TIMEOUT_S = 600.0
CALIBRATION_PROMPT_TOKENS = 64
CALIBRATION_DECODE_TOKENS = 16


def _engine_args(config: EngineConfig, context: int):
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=str(config.model_dir),
        # fp32 like the store's weights and the torch engine, so greedy tokens match.
        dtype="float32",
        # CUDA graphs and torch.compile do not exist on CPU and slow a GPU's start.
        enforce_eager=True,
        max_model_len=context,
        max_num_seqs=config.max_batch,
        seed=0,
        disable_log_stats=True,
        # On CPU vLLM otherwise reserves 92% of the machine's memory for the KV cache
        # and refuses to start when that much is not free; on a GPU it sizes it itself.
        # The budget must hold one max-length sequence (SmolLM2-135M: 46 KiB a token,
        # 8k tokens = 368 MiB; the default 512 MiB does).
        kv_cache_memory_bytes=config.kv_budget_mb * 2**20 if config.device == "cpu" else None,
    )


def _async_llm_class():
    """AsyncLLM whose __del__ does not shut down a second time: after close() it would,
    and at interpreter exit (module globals gone) that fails with a traceback."""
    from vllm.v1.engine.async_llm import AsyncLLM

    class ClosableAsyncLLM(AsyncLLM):
        closed = False

        def shutdown(self, timeout: float | None = None) -> None:
            if not self.closed:
                self.closed = True
                super().shutdown(timeout)

    return ClosableAsyncLLM


class VllmEngine(TokenizedEngine):
    def __init__(self, llm, loop: LoopThread, tokenizer, eos_ids: frozenset[int], context: int):
        super().__init__(ModelText(tokenizer, eos_ids, context))
        self._llm = llm
        self._loop = loop

    @classmethod
    def load(cls, config: EngineConfig) -> VllmEngine:
        # The engine core is a child process; forking the gRPC server's threads is unsafe.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        async_llm = _async_llm_class()
        model_dir = Path(config.model_dir)
        text = ModelText.load(model_dir)
        args = _engine_args(config, text.context_length)
        loop = LoopThread()

        async def start():
            return async_llm.from_engine_args(args)

        try:
            llm = loop.run(start(), LOAD_TIMEOUT_S)
        except Exception as exc:
            loop.close()
            raise Unavailable(f"vLLM could not load {model_dir.name}: {exc}") from exc
        return cls(llm, loop, text.tokenizer, text.eos_ids, text.context_length)

    @classmethod
    def over(cls, runner: StageRunner, model_dir: Path) -> VllmEngine:
        raise InvalidRequest(
            "the vllm engine serves whole models only; splits across peers run on the "
            "torch engine (vLLM splits need GPU peers and are not built yet)"
        )

    def run(
        self, prepared: PreparedRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        # A fresh vLLM id: a resumed request reuses our id while vLLM may still be
        # dropping the aborted one.
        stream = Stream(self._llm, self._loop, f"{prepared.request_id}-{uuid.uuid4().hex[:8]}")
        stream.start(prepared.prompt_ids, sampling_params(prepared, self.eos_ids))
        try:
            yield from stream.chunks(self.tokenizer, self.eos_ids, prepared, cancel)
        finally:
            stream.close()

    def calibrate(self) -> Speeds:
        """Prefill 64 tokens, then decode 16 greedily (EOS ignored), after a warm-up."""
        self._timed_run(8, 2)
        prefill_s, decode_s = self._timed_run(CALIBRATION_PROMPT_TOKENS, CALIBRATION_DECODE_TOKENS)
        return Speeds(
            prefill_tokens_per_s=CALIBRATION_PROMPT_TOKENS / max(prefill_s, 1e-9),
            decode_tokens_per_s=(CALIBRATION_DECODE_TOKENS - 1) / max(decode_s, 1e-9),
        )

    def _timed_run(self, prompt: int, decode: int) -> tuple[float, float]:
        ids = tuple(range(1000, 1000 + prompt))
        stream = Stream(self._llm, self._loop, f"calibrate-{uuid.uuid4().hex[:8]}")
        t0 = time.monotonic()
        stream.start(ids, sampling_params(None, frozenset(), max_tokens=decode))
        try:
            first = None
            for _ in stream.outputs(None):
                first = first or time.monotonic()
        finally:
            stream.close()
        t2 = time.monotonic()
        first = first or t2
        return first - t0, t2 - first

    def close(self) -> None:
        self._llm.shutdown()
        self._loop.close()
