"""VllmEngine: the Engine interface over vLLM's async engine (AsyncLLM), whole models only.

vLLM batches every running request itself (continuous batching), so this engine takes
concurrent `run`s, up to `backend.max_batch` at once (vLLM's max_num_seqs; more wait in
vLLM's own queue), in `backend.kv_budget_mb` of KV cache on CPU. Prompts go in as token ids
from the same chat template as the torch engine's, and vLLM's own detokenizer is off: the
text, stop strings and finish reasons come from the torch engine's Detokenizer and
StopMatcher, so both engines answer a request with the same tokens, text and usage. Splits
across peers are refused (`over`): vLLM's CPU build cannot run its pipeline parallelism (see
docs/architecture.md), and the GPU path is not built yet.

With a Kubo at hand (`kv` on) and a model of full-attention layers only, vLLM runs our KV
connector (connector.py): the swarm prefix cache's blocks for a prompt are fetched here
(prefix.PrefixRun), handed to vLLM's workers as a file, and the blocks vLLM computed come
back the same way to be stored under the same chained keys as the torch engine's, so P/D
and the prefix cache work across the two engines.

vLLM's engine core is a separate process, spawned (not forked: the gRPC server's threads
must not be copied), so the program's entry point needs the `__main__` guard.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoConfig

from edgellm.engine.base import EngineConfig
from edgellm.engine.runner import StageRunner
from edgellm.engine.tokenized import ModelText, TokenizedEngine
from edgellm.engine.types import GenerationChunk, PreparedRequest, Speeds
from edgellm.engine.vllm import kvfile
from edgellm.engine.vllm.loop import LoopThread
from edgellm.engine.vllm.prefix import (
    PrefixRun,
    SpotCheckFailed,
    VllmKV,
    layout_of,
    vllm_block_size,
)
from edgellm.engine.vllm.scratch import private_dir
from edgellm.engine.vllm.stream import Stream, sampling_params
from edgellm.errors import InvalidRequest, Unavailable
from edgellm.kv.prefix import PrefixCache
from edgellm.kv.stage import KVLayout

log = logging.getLogger(__name__)

# Seconds to wait for the engine core to start and load the model.
LOAD_TIMEOUT_S = 600.0
CALIBRATION_PROMPT_TOKENS = 64
CALIBRATION_DECODE_TOKENS = 16

# vLLM's processes talk over ZeroMQ sockets it names by uuid under VLLM_RPC_BASE_PATH (the
# system's temp dir by default) and never removes: seven an engine, so every engine a
# backend or a test suite loaded left seven in /tmp. Each engine gets a directory of its
# own for them instead (scratch.private_dir), removed at close. The variable is read as
# the engine starts, so loads take turns; a user's own setting is left alone.
RPC_BASE_ENV = "VLLM_RPC_BASE_PATH"
IPC_PREFIX = "edgellm-vllm-ipc-"
_LOAD_LOCK = threading.Lock()


# vLLM loads our KV connector by module path in its own processes (connector.py).
CONNECTOR = {
    "kv_connector": "EdgeLLMConnector",
    "kv_connector_module_path": "edgellm.engine.vllm.connector",
    "kv_role": "kv_both",
    # A load that fails costs its pages a recompute, not the request.
    "kv_load_failure_policy": "recompute",
}


def _engine_args(config: EngineConfig, context: int, kv: VllmKV | None):
    from vllm.engine.arg_utils import AsyncEngineArgs

    connector = {"kv_transfer_config": CONNECTOR, "block_size": kv.vllm_block} if kv else {}
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
        **connector,
    )


def kv_bytes_needed(model_config, context: int) -> int:
    """At least the fp32 K/V vLLM holds for one `context`-token sequence of the model a
    transformers config describes: every position of a full-attention layer, a window of
    a sliding-window one (other kinds of layer are not counted: a lower bound, so that
    nothing vLLM would take is refused)."""
    layout = KVLayout.of_config(model_config, 0, model_config.num_hidden_layers, torch.float32)
    per_layer_position = 2 * layout.kv_heads * layout.head_dim * layout.dtype.itemsize
    window = getattr(model_config, "sliding_window", None)
    # Without per-layer kinds, a window applies to every layer (Mistral).
    every = "sliding_attention" if window else "full_attention"
    kinds = getattr(model_config, "layer_types", None) or [every] * layout.layers
    window = min(window or context, context)
    positions = {"full_attention": context, "sliding_attention": window}
    return per_layer_position * sum(positions.get(kind, 0) for kind in kinds)


def _check_kv_budget(config: EngineConfig, model_dir: Path, context: int) -> None:
    """Refuse, in the user's terms, a KV budget vLLM would refuse at its start (on CPU,
    `kv_cache_memory_bytes` is the budget; vLLM's own message names a GPU setting). A
    lower bound: vLLM also keeps a null block, so a budget within a block of it is
    still refused by vLLM itself (SmolLM2-135M: 360 MiB here; vLLM wants one more 128-token
    block, 5.6 MiB)."""
    if config.device != "cpu":
        return
    needed = kv_bytes_needed(AutoConfig.from_pretrained(model_dir), context)
    if config.kv_budget_mb * 2**20 < needed:
        raise Unavailable(
            f"backend.kv_budget_mb is {config.kv_budget_mb} MiB; the vllm engine needs at "
            f"least {-(-needed // 2**20)} MiB of K/V for one {context}-token sequence of "
            f"{model_dir.name}"
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
    def __init__(
        self,
        llm,
        loop: LoopThread,
        text: ModelText,
        kv: tuple[PrefixCache, VllmKV] | None = None,
        ipc_dir: Path | None = None,
    ):
        super().__init__(text)
        self._llm = llm
        self._loop = loop
        # Where vLLM's sockets are (None: the user's VLLM_RPC_BASE_PATH); gone at close.
        self.ipc_dir = ipc_dir
        # Whether vLLM runs our connector; the cache itself is `prefix_cache`, public as
        # the torch engine's (the KV control RPCs list it).
        self._kv = kv[1] if kv is not None else None
        self.prefix_cache = kv[0] if kv is not None else None

    @classmethod
    def load(cls, config: EngineConfig) -> VllmEngine:
        # The engine core is a child process; forking the gRPC server's threads is unsafe.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        async_llm = _async_llm_class()
        model_dir = Path(config.model_dir)
        text = ModelText.load(model_dir)
        _check_kv_budget(config, model_dir, text.context_length)
        kv = _open_kv(config, model_dir)
        args = _engine_args(config, text.context_length, kv[1] if kv else None)
        loop = LoopThread()

        async def start():
            return async_llm.from_engine_args(args)

        ipc = None
        try:
            with _LOAD_LOCK:
                ipc = _ipc_dir()
                with _environ(RPC_BASE_ENV, ipc):
                    llm = loop.run(start(), LOAD_TIMEOUT_S)
        except Exception as exc:
            loop.close()
            if ipc is not None:
                shutil.rmtree(ipc, ignore_errors=True)
            if kv is not None:
                kv[0].close()
                kv[1].close()
            raise Unavailable(f"vLLM could not load {model_dir.name}: {exc}") from exc
        return cls(llm, loop, text, kv, ipc)

    @classmethod
    def over(cls, runner: StageRunner, model_dir: Path) -> VllmEngine:
        raise InvalidRequest(
            "the vllm engine serves whole models only; splits across peers run on the "
            "torch engine (vLLM splits need GPU peers and are not built yet)"
        )

    def run(
        self, prepared: PreparedRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        prefix = self._prefix_run(prepared)
        try:
            yield from self._attempt(prepared, prefix, cancel)
        except SpotCheckFailed as exc:
            # Nothing was streamed (the check runs before the first chunk): run it again
            # with every position computed, telling the node whom to drop.
            log.warning("kv: %s; computing the whole prompt", exc)
            dropped = prefix.hit.dropped
            again = self._prefix_run(replace(prepared, no_prefix_cache=True))
            yield from self._attempt(prepared, again, cancel, dropped)

    def _prefix_run(self, prepared: PreparedRequest) -> PrefixRun | None:
        if self._kv is None or self.prefix_cache is None:
            return None
        return PrefixRun(self.prefix_cache, self._kv, prepared)

    def _attempt(
        self,
        prepared: PreparedRequest,
        prefix: PrefixRun | None,
        cancel: threading.Event | None,
        dropped: tuple[str, ...] = (),
    ) -> Iterator[GenerationChunk]:
        # A fresh vLLM id: a resumed request reuses our id while vLLM may still be
        # dropping the aborted one.
        stream = Stream(self._llm, self._loop, f"{prepared.request_id}-{uuid.uuid4().hex[:8]}")
        on_first = prefix.prefilled if prefix is not None else None
        first = True
        try:
            extra, salt = prefix.params() if prefix is not None else ({}, None)
            params = sampling_params(prepared, self.eos_ids, None, extra)
            stream.start(prepared.prompt_ids, params, salt)
            for chunk in stream.chunks(self.tokenizer, self.eos_ids, prepared, cancel, on_first):
                if first:
                    first = False
                    more = prefix.hit.dropped if prefix is not None else ()
                    chunk = replace(chunk, dropped_kv_holders=dropped + more)
                if chunk.finish_reason is not None and prefix is not None:
                    stored_ms = prefix.finish(harmless=True)
                    timings = replace(
                        chunk.timings, kv_fetch_ms=prefix.hit.fetch_ms, kv_store_ms=stored_ms
                    )
                    chunk = replace(chunk, timings=timings)
                yield chunk
        finally:
            stream.close()
            if prefix is not None:
                prefix.finish(harmless=False)  # no-op once finished

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
        if self.ipc_dir is not None:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)
        if self.prefix_cache is not None:
            self.prefix_cache.close()
        if self._kv is not None:
            self._kv.close()


def _ipc_dir() -> Path | None:
    """A new directory for an engine's sockets; None when the user set VLLM_RPC_BASE_PATH."""
    return None if RPC_BASE_ENV in os.environ else private_dir(IPC_PREFIX)


@contextmanager
def _environ(name: str, value: Path | None) -> Iterator[None]:
    """The environment variable `name` set to `value` inside (None: left as it is)."""
    if value is None:
        yield
        return
    os.environ[name] = str(value)
    try:
        yield
    finally:
        del os.environ[name]


def _open_kv(config: EngineConfig, model_dir: Path) -> tuple[PrefixCache, VllmKV] | None:
    """The prefix cache through the connector, or None (no Kubo, or a model or kernel it
    cannot map)."""
    if config.kv is None or not config.kv.enabled:
        return None
    from edgellm.engine.vllm.connector import unsupported_layout  # imports vLLM

    layout, why = layout_of(model_dir)
    block = vllm_block_size(config.kv.block_size)
    why = why or unsupported_layout(layout.dtype, block, layout.head_dim)
    if why:
        log.warning("kv: the vllm engine keeps no KV blocks for %s: %s", model_dir.name, why)
        return None
    cache = PrefixCache.open(config.kv, model_dir)
    if cache is None:
        return None
    return cache, VllmKV(layout, block, kvfile.scratch_dir())
