"""Prompt tokenization, incremental detokenization and stop strings.

`encode_prompt` applies the chat template (prompt, messages) or none (raw_prompt);
`PromptTokenizer` does that without a loaded model. `Detokenizer` emits text only once it
is final: never half a UTF-8 character (the tokenizer's decode shows those as U+FFFD),
and with the word-boundary handling of tokenizers that merge across tokens (vLLM's
prefix/read offset scheme). `StopMatcher` holds back any tail that could still grow into
a stop string, so a partial stop string is never emitted.
"""

from __future__ import annotations

from edgellm.engine.types import FinishReason, GenerationRequest
from edgellm.engine.validation import check_input
from edgellm.errors import InvalidRequest

_REPLACEMENT = "\ufffd"
# Tokens of context decoded before the new ones, so leading-space rules apply correctly.
_CONTEXT_TOKENS = 5


def encode_prompt(tokenizer, request: GenerationRequest) -> list[int]:
    """Prompt token ids: chat template for prompt/messages, plain text for raw_prompt."""
    check_input(request)
    if request.raw_prompt is not None:
        return list(tokenizer(request.raw_prompt)["input_ids"])
    if request.messages is not None:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
    else:
        messages = [{"role": "user", "content": request.prompt}]
    if not tokenizer.chat_template:
        raise InvalidRequest("this model has no chat template; use raw_prompt")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class PromptTokenizer:
    """The torch engine's prompt tokenization without the model (a PromptEncoder)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, request: GenerationRequest) -> list[int]:
        return encode_prompt(self.tokenizer, request)


class Detokenizer:
    def __init__(self, tokenizer, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append a token; return the text that became final."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(_REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return full_text[len(prefix_text) :]

    def flush(self) -> str:
        """Whatever is still pending at the end, best effort (may hold U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return full_text[len(prefix_text) :] if full_text.startswith(prefix_text) else ""


class StopMatcher:
    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add final text; return (text safe to emit, whether a stop string was hit)."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        keep = self._held_tail(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def _held_tail(self, buffer: str) -> int:
        """Length of the longest suffix of buffer that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text


def advance_text(
    token: int, eos_ids: frozenset[int], detok: Detokenizer, stops: StopMatcher
) -> tuple[FinishReason | None, str]:
    """Text made final by `token`, and the finish reason if it ends the generation (every
    engine's decode loop, so the torch and vllm engines end and cut text alike)."""
    if token in eos_ids:
        return drain_text(detok, stops, FinishReason.STOP)
    text, hit = stops.feed(detok.add(token))
    return (FinishReason.STOP_STRING if hit else None), text


def drain_text(
    detok: Detokenizer, stops: StopMatcher, reason: FinishReason
) -> tuple[FinishReason, str]:
    """Release held-back text at the end; a stop string in it still wins."""
    text, hit = stops.feed(detok.flush())
    if hit:
        return FinishReason.STOP_STRING, text
    return reason, text + stops.flush()
