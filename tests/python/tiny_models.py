"""Small randomly initialised decoder models of each supported architecture, built by the
tests (a few layers, tiny widths, never downloaded), with the embedded model's tokenizer."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers

_COMMON = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    # Wider than the default 0.02 so a random model's greedy answer varies token to token.
    initializer_range=0.2,
)


def _configs() -> dict[str, transformers.PretrainedConfig]:
    return {
        "llama": transformers.LlamaConfig(**_COMMON),
        "qwen2": transformers.Qwen2Config(**_COMMON),
        "qwen3": transformers.Qwen3Config(**_COMMON, head_dim=16),
        # A window shorter than the prompts, so the window matters.
        "mistral": transformers.MistralConfig(**_COMMON, sliding_window=8),
        "phi3": transformers.Phi3Config(**_COMMON, pad_token_id=0),
        # Six layers, every third global: a split at 1 or 2|3 cuts between kinds; a
        # window shorter than the prompts; capped logits, as Gemma 2/3 may have.
        "gemma3": transformers.Gemma3TextConfig(
            **{**_COMMON, "num_hidden_layers": 6},
            head_dim=16,
            sliding_window=8,
            sliding_window_pattern=3,
            final_logit_softcapping=30.0,
            # Tied, a random Gemma echoes its (scaled) input embedding as the answer.
            tie_word_embeddings=False,
        ),
    }


ARCHITECTURES = tuple(_configs())


def quiet(phase: str, done: int, total: int) -> None:
    """A progress callback that shows nothing: `add_model` of the tests' models."""


def build(name: str, out: Path, tokenizer_dir: Path, seed: int = 0, max_positions: int = 0) -> Path:
    """Write a random `name` model as a transformers directory in `out`; `max_positions`,
    when given, is its context length (512 otherwise)."""
    torch.manual_seed(seed)
    config = _configs()[name]
    if max_positions:
        config.max_position_embeddings = max_positions
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja"):
            shutil.copy(f, out)
    return out


def write_gguf(out: Path, architecture: str) -> Path:
    """A GGUF file that names `architecture` and holds one small tensor: enough for
    `model add` to read its header (and refuse an architecture it does not run)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str]) -> None:
    """`python -m tests.python.tiny_models ARCH OUT TOKENIZER_DIR [SEED]`, for the Go
    end-to-end tests, which build their models the same way."""
    arch, out, tokenizer_dir = argv[:3]
    seed = int(argv[3]) if len(argv) > 3 else 0
    build(arch, Path(out), Path(tokenizer_dir), seed)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
