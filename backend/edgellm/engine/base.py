"""The engine interface: one model on this device, or its layers run by stages elsewhere.

Kept small on purpose (exo's Engine is sixty lines), and complete: callers construct
engines through `edgellm.engine.registry` (which imports only the chosen implementation)
and use nothing but what is here, never a concrete engine's own attributes.

- `load`, `over`, `load_encoder`: an engine over this machine's weights, over stages that
  run elsewhere (a `StageRunner`, e.g. stage actors on other peers), or only its prompt
  tokenization (no weights);
- `encode`, `prepare`, `run`: tokenize a prompt; validate and tokenize a whole request
  (every InvalidRequest is raised there, before any compute); run a prepared request.
  `generate` is prepare-then-run, `resume` the same after a failover, with the tokens the
  lost stream had produced;
- `prefix_cache`: KV blocks over IPFS the engine reuses and stores, which the KV control
  RPCs list and serve;
- `calibrate`, `close`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgellm.config import KVConfig
from edgellm.engine.runner import StageRunner
from edgellm.engine.types import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    PreparedRequest,
    Speeds,
    Timings,
    Usage,
)
from edgellm.engine.validation import check_resume, resume_budget

if TYPE_CHECKING:
    from edgellm.kv.prefix import PrefixCache


@dataclass(frozen=True)
class EngineConfig:
    # Model store directory of the model (config.json, model.safetensors, tokenizer).
    model_dir: Path
    # "cpu" or "cuda"; "auto" is resolved before an engine sees it.
    device: str = "cpu"
    # KV-cache blocks over IPFS (prefix cache); None or no ipfs_api: off.
    kv: KVConfig | None = None


class PromptEncoder(Protocol):
    def encode(self, request: GenerationRequest) -> list[int]:
        """Prompt token ids: chat template for prompt/messages, plain text for raw_prompt.
        Bad input raises InvalidRequest."""


class Engine(ABC):
    """A loaded model that turns requests into token streams."""

    # KV-cache blocks over IPFS this engine reuses and stores (None: off).
    prefix_cache: PrefixCache | None = None
    # How many `run`s may go on at once (an engine that batches takes several); the
    # server queues the rest.
    max_concurrency: int = 1

    @classmethod
    @abstractmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Load the model; raises a RecoverableError when it cannot."""

    @classmethod
    @abstractmethod
    def over(cls, runner: StageRunner, model_dir: Path) -> Engine:
        """An engine whose layers run in `runner`; the tokenizer, generation config and
        context length come from the local store entry `model_dir`. No prefix cache: the
        runner's stages hold the KV. An engine that cannot drive a StageRunner raises
        InvalidRequest."""

    @classmethod
    @abstractmethod
    def load_encoder(cls, model_dir: Path) -> PromptEncoder:
        """This engine's prompt tokenization without the weights: the token ids `encode`
        of the loaded model gives (PrefixKeys for a model that is not loaded)."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum prompt + completion tokens."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Token ids are in [0, vocab_size)."""

    @abstractmethod
    def encode(self, request: GenerationRequest) -> list[int]:
        """As PromptEncoder.encode."""

    @abstractmethod
    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Validate and tokenize; every InvalidRequest is raised here, before any compute."""

    @abstractmethod
    def run(
        self, prepared: PreparedRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """An iterator of one chunk per decoded token; the last one carries the finish
        reason, usage and timings. It raises RequestCancelled once `cancel` is set."""

    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """`run(prepare(request))`. Eager: bad input raises InvalidRequest from this call
        itself (not from the iterator), before the caller queues for the engine."""
        return self.run(self.prepare(request), cancel)

    def resume(
        self,
        request: GenerationRequest,
        resumed: Sequence[int],
        cancel: threading.Event | None = None,
    ) -> Iterator[GenerationChunk]:
        """The continuation of `generate(request)` after a failover, `resumed` being the
        tokens the lost stream had produced (GenerateRequest.resume_token_ids): they are
        appended to the prompt (so the detokenizer, seeded with the prompt ids, continues
        the text after them), are not streamed again, and count against max_tokens and in
        the final usage. Greedy continuation equals the uninterrupted answer; sampled
        continuation is a valid sample but not the same one (the sampler starts afresh).
        Eager like generate.

        Known limits: a stop string straddling the failover point is not matched, and text
        the detokenizer held back at that point (half a UTF-8 character) may be lost; token
        ids are exact either way."""
        prepared = self.prepare(request)
        check_resume(resumed, self.vocab_size)
        prompt_tokens, count = len(prepared.prompt_ids), len(resumed)
        remaining = resume_budget(prepared.max_tokens, count)
        if remaining == 0:  # the lost stream had produced the whole budget
            usage = Usage(prompt_tokens, count)
            return iter([GenerationChunk("", (), FinishReason.LENGTH, usage, Timings(0, 0, 0, 0))])
        prepared = replace(
            prepared, prompt_ids=(*prepared.prompt_ids, *resumed), max_tokens=remaining
        )
        return _resumed(self.run(prepared, cancel), prompt_tokens, count)

    def calibrate(self) -> Speeds:
        """Measure prefill and decode speed on this machine (optional hook)."""
        return Speeds(0.0, 0.0)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release memory; the engine is unusable afterwards."""


def _resumed(
    chunks: Iterator[GenerationChunk], prompt_tokens: int, resumed: int
) -> Iterator[GenerationChunk]:
    """Usage of the whole answer: the prompt without the replayed tokens, which count as
    completion tokens."""
    for chunk in chunks:
        if chunk.usage is not None:
            usage = replace(
                chunk.usage,
                prompt_tokens=prompt_tokens,
                completion_tokens=resumed + chunk.usage.completion_tokens,
            )
            chunk = replace(chunk, usage=usage)
        yield chunk
