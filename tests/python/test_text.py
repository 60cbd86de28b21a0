"""Incremental detokenization and stop-string matching."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from edgellm.engine.torch.text import Detokenizer, StopMatcher


@pytest.fixture(scope="module")
def tokenizer(store_dir: Path):
    return AutoTokenizer.from_pretrained(store_dir)


@pytest.mark.parametrize("text", ["Hello world, héllo wörld!", "emoji 🚀🌍 and 中文字符 mixed"])
def test_detokenizer_reassembles_text_without_broken_characters(tokenizer, text) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tokenizer, [])
    pieces = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_stop_matcher_holds_back_possible_prefix() -> None:
    stops = StopMatcher(("STOP",))
    assert stops.feed("abc S") == ("abc ", False)
    assert stops.feed("T") == ("", False)
    assert stops.feed("x") == ("STx", False)
    assert stops.feed("yy ST") == ("yy ", False)
    assert stops.feed("OP and more") == ("", True)


def test_stop_matcher_earliest_of_several() -> None:
    stops = StopMatcher(("world", "lo"))
    assert stops.feed("hello world") == ("hel", True)


def test_stop_matcher_flush_releases_pending() -> None:
    stops = StopMatcher(("abc",))
    assert stops.feed("xxab") == ("xx", False)
    assert stops.flush() == "ab"
