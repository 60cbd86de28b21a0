"""The decoder architectures the torch engine runs in layer ranges.

A stage builds `AutoModel` from a config cropped to its layers and loads only those
layers' tensors (engine/torch/stage.py), which works for a model whose base model has
`embed_tokens`, `layers.N.*` and `norm` and whose per-layer settings live in
`layer_types`. Each architecture below is tested split and whole against transformers'
`generate` (tests/python/test_architectures.py); another is refused at `model add`.
"""

from __future__ import annotations

from edgellm.errors import UnsupportedModel

# transformers class -> GGUF `general.architecture`.
SUPPORTED: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Phi3ForCausalLM": "phi3",
    "Gemma3ForCausalLM": "gemma3",
}


def _names() -> str:
    return ", ".join(sorted(SUPPORTED))


def check_class(name: str) -> None:
    """Refuse a transformers architecture the engine does not run."""
    if name not in SUPPORTED:
        raise UnsupportedModel(f"architecture {name!r} is not supported; supported: {_names()}")


def check_gguf(name: str) -> None:
    """Refuse a GGUF `general.architecture` the engine does not run."""
    if name not in SUPPORTED.values():
        supported = ", ".join(sorted(SUPPORTED.values()))
        raise UnsupportedModel(
            f"GGUF architecture {name!r} is not supported; supported: {supported}"
        )
