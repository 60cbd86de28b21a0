"""TorchEngine: the Engine interface over a chain of torch stages, in this process (a
Pipeline) or wherever a StageRunner runs them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoConfig

from edgellm.engine.base import EngineConfig
from edgellm.engine.runner import StageRunner
from edgellm.engine.tokenized import ModelText, TokenizedEngine
from edgellm.engine.torch.batcher import Batcher
from edgellm.engine.torch.generation import Sequence
from edgellm.engine.torch.pipeline import Pipeline
from edgellm.engine.torch.slots import slots_for
from edgellm.engine.types import GenerationChunk, PreparedRequest, Speeds
from edgellm.kv.prefix import PrefixCache

CALIBRATION_PREFILL_TOKENS = 64
CALIBRATION_DECODE_TOKENS = 16


class TorchEngine(TokenizedEngine):
    def __init__(
        self,
        pipeline: StageRunner,
        tokenizer,
        eos_ids: frozenset[int],
        context: int,
        prefix_cache: PrefixCache | None = None,
    ):
        super().__init__(ModelText(tokenizer, eos_ids, context))
        self.pipeline = pipeline
        # KV blocks over IPFS; only for in-process stages (a Pipeline).
        self.prefix_cache = prefix_cache
        # Concurrent requests decode as one batch (continuous batching).
        self._batcher = Batcher(pipeline, self._sequence)

    @classmethod
    def load(cls, config: EngineConfig, splits: list[int] | None = None) -> TorchEngine:
        """`splits` cuts the model into in-process stages, e.g. [13] -> [0, 13) + [13, n).
        The prefix cache is the one `config.kv` describes (None: off); the slot pool is
        sized from `config.max_batch` and `config.kv_budget_mb`."""
        model_dir = Path(config.model_dir)
        slots = slots_for(
            AutoConfig.from_pretrained(model_dir), config.max_batch, config.kv_budget_mb
        )
        pipeline = Pipeline.load(model_dir, splits, config.device, slots)
        engine = cls.over(pipeline, model_dir)
        if config.kv is not None:
            engine.prefix_cache = PrefixCache.open(config.kv, model_dir)
        return engine

    @classmethod
    def over(cls, runner: StageRunner, model_dir: Path) -> TorchEngine:
        text = ModelText.load(model_dir)
        return cls(runner, text.tokenizer, text.eos_ids, text.context_length)

    def run(
        self, prepared: PreparedRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        return self._batcher.submit(prepared, cancel)

    @property
    def step_sizes(self) -> dict[int, int]:
        """Decode steps run so far, by how many sequences each carried."""
        return dict(self._batcher.step_sizes)

    def _sequence(self, prepared: PreparedRequest) -> Sequence:
        return Sequence(self.pipeline, self.tokenizer, self.eos_ids, prepared, self.prefix_cache)

    @torch.inference_mode()
    def calibrate(self) -> Speeds:
        """Prefill 64 tokens, then decode 16 greedily (EOS ignored), after a short warm-up
        (the first forward passes pay for kernel selection and allocation)."""
        self._timed_run(8, 2)
        prefill_s, decode_s = self._timed_run(CALIBRATION_PREFILL_TOKENS, CALIBRATION_DECODE_TOKENS)
        return Speeds(
            prefill_tokens_per_s=CALIBRATION_PREFILL_TOKENS / max(prefill_s, 1e-9),
            decode_tokens_per_s=CALIBRATION_DECODE_TOKENS / max(decode_s, 1e-9),
        )

    def _timed_run(self, prefill: int, decode: int) -> tuple[float, float]:
        device = self.pipeline.device
        session = self.pipeline.session(prefill + decode)
        ids = torch.arange(prefill, device=device).unsqueeze(0) + 1000
        t0 = time.monotonic()
        logits = session.forward(ids)
        t1 = time.monotonic()
        step = torch.empty((1, 1), dtype=torch.long, device=device)
        for _ in range(decode):
            step.fill_(int(torch.argmax(logits, dim=-1)))
            logits = session.forward(step)
        t2 = time.monotonic()
        session.close()
        return t1 - t0, t2 - t1

    def close(self) -> None:
        self._batcher.close()
        self.pipeline.close()
        if self.prefix_cache is not None:
            self.prefix_cache.close()
