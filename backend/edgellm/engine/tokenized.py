"""What every engine that reads the model's own transformers tokenizer shares: the chat
template, the end-of-sequence ids, the context length and a request's preparation, so
the torch and vllm engines turn a request into the same prompt tokens and limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from edgellm.engine.base import Engine
from edgellm.engine.torch.text import PromptTokenizer, encode_prompt
from edgellm.engine.types import GenerationRequest, PreparedRequest
from edgellm.engine.validation import check_sampling, resolve_max_tokens


@dataclass(frozen=True)
class ModelText:
    """A model directory's tokenizer, EOS token ids and context length."""

    tokenizer: Any
    eos_ids: frozenset[int]
    context_length: int

    @classmethod
    def load(cls, model_dir: Path) -> ModelText:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        context = AutoConfig.from_pretrained(model_dir).max_position_embeddings
        return cls(tokenizer, _eos_ids(model_dir, tokenizer), context)


def _eos_ids(model_dir: Path, tokenizer) -> frozenset[int]:
    eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return frozenset(int(i) for i in ids if i is not None)


class TokenizedEngine(Engine):
    """An Engine whose prompts are the model tokenizer's (chat template included)."""

    def __init__(self, text: ModelText) -> None:
        self.tokenizer = text.tokenizer
        self.eos_ids = text.eos_ids
        self._context_length = text.context_length

    @classmethod
    def load_encoder(cls, model_dir: Path) -> PromptTokenizer:
        return PromptTokenizer(AutoTokenizer.from_pretrained(model_dir))

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, request: GenerationRequest) -> list[int]:
        return encode_prompt(self.tokenizer, request)

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        start = request.arrival_time if request.arrival_time is not None else time.monotonic()
        check_sampling(request.sampling)
        prompt_ids = self.encode(request)
        max_tokens = resolve_max_tokens(request.sampling, len(prompt_ids), self.context_length)
        return PreparedRequest(
            request_id=request.request_id,
            prompt_ids=tuple(prompt_ids),
            max_tokens=max_tokens,
            sampling=request.sampling,
            start=start,
            no_prefix_cache=request.no_prefix_cache,
            kv_manifest=request.kv_manifest,
        )
