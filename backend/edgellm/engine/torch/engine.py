"""TorchEngine: the Engine interface over an in-process pipeline of torch stages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from edgellm.engine.base import Engine, EngineConfig
from edgellm.engine.runner import StageRunner
from edgellm.engine.torch import generation
from edgellm.engine.torch.pipeline import Pipeline
from edgellm.engine.torch.sampler import Sampler
from edgellm.engine.types import GenerationChunk, GenerationRequest, Speeds
from edgellm.engine.validation import check_input, check_sampling, resolve_max_tokens
from edgellm.errors import InvalidRequest
from edgellm.kv.prefix import PrefixCache

CALIBRATION_PREFILL_TOKENS = 64
CALIBRATION_DECODE_TOKENS = 16


def _eos_ids(model_dir: Path, tokenizer) -> frozenset[int]:
    eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return frozenset(int(i) for i in ids if i is not None)


class TorchEngine(Engine):
    def __init__(
        self,
        pipeline: StageRunner,
        tokenizer,
        eos_ids: frozenset[int],
        context: int,
        prefix: PrefixCache | None = None,
    ):
        self.pipeline = pipeline
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self._context_length = context
        # KV blocks over IPFS; only for in-process stages (a Pipeline).
        self.prefix = prefix

    @classmethod
    def load(
        cls,
        config: EngineConfig,
        splits: list[int] | None = None,
        prefix: PrefixCache | None = None,
    ) -> TorchEngine:
        """`splits` cuts the model into in-process stages, e.g. [13] -> [0, 13) + [13, n).
        The prefix cache is `prefix`, else the one `config.kv` describes (None: off)."""
        model_dir = Path(config.model_dir)
        pipeline = Pipeline.load(model_dir, splits, config.device)
        engine = cls.over(pipeline, model_dir)
        if prefix is None and config.kv is not None:
            prefix = PrefixCache.open(config.kv, model_dir)
        engine.prefix = prefix
        return engine

    @classmethod
    def over(cls, runner: StageRunner, model_dir: Path) -> TorchEngine:
        """An engine whose stages run in `runner` (local or on other peers); the tokenizer,
        generation config and context length come from the local store entry."""
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        context = AutoConfig.from_pretrained(model_dir).max_position_embeddings
        return cls(runner, tokenizer, _eos_ids(model_dir, tokenizer), context)

    @property
    def context_length(self) -> int:
        return self._context_length

    def encode(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids: chat template for prompt/messages, plain text for raw_prompt."""
        check_input(request)
        if request.raw_prompt is not None:
            return list(self.tokenizer(request.raw_prompt)["input_ids"])
        if request.messages is not None:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
        else:
            messages = [{"role": "user", "content": request.prompt}]
        if not self.tokenizer.chat_template:
            raise InvalidRequest("this model has no chat template; use raw_prompt")
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, request: GenerationRequest) -> generation.Job:
        """Validate and tokenize; every InvalidRequest is raised here, before any compute."""
        start = request.arrival_time if request.arrival_time is not None else time.monotonic()
        check_sampling(request.sampling)
        prompt_ids = self.encode(request)
        max_tokens = resolve_max_tokens(request.sampling, len(prompt_ids), self.context_length)
        return generation.Job(
            request_id=request.request_id,
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            sampler=Sampler(request.sampling, self.pipeline.device),
            stops=request.sampling.stop,
            start=start,
            no_prefix_cache=request.no_prefix_cache,
            kv_manifest=request.kv_manifest,
        )

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        job = self.prepare(request)  # eager, so bad input fails before the caller queues
        return self._run(job, cancel)

    def _run(self, job: generation.Job, cancel: threading.Event | None):
        with torch.inference_mode():
            yield from generation.run(
                self.pipeline, self.tokenizer, self.eos_ids, job, cancel, self.prefix
            )

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
        self.pipeline.close()
        if self.prefix is not None:
            self.prefix.close()
