"""Incremental detokenization and stop strings.

`Detokenizer` emits text only once it is final: never half a UTF-8 character (the
tokenizer's decode shows those as U+FFFD), and with the word-boundary handling of
tokenizers that merge across tokens (vLLM's prefix/read offset scheme). `StopMatcher`
holds back any tail that could still grow into a stop string, so a partial stop string
is never emitted.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"
# Tokens of context decoded before the new ones, so leading-space rules apply correctly.
_CONTEXT_TOKENS = 5


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
