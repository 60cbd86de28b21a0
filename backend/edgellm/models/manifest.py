"""`edgellm-model.json`: what the store knows about one converted model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgellm.errors import StoreError

MANIFEST_NAME = "edgellm-model.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    # Short model id, e.g. "smollm2-135m".
    id: str
    # CIDv1 of model.safetensors, as `ipfs add --cid-version=1` computes it.
    weights_cid: str
    # transformers architecture class, e.g. "LlamaForCausalLM".
    architecture: str
    num_layers: int
    hidden_size: int
    # Maximum positions the model supports (prompt + completion).
    context_length: int
    # dtype of the stored tensors, e.g. "float32".
    dtype: str
    # Size of model.safetensors in bytes.
    weights_bytes: int
    # Number of stored parameters (a tied LM head counted once); 0 in entries written
    # before this field existed.
    parameters: int = 0
    # Where the model came from: "embedded:<package>", "gguf:<path>", "dir:<path>",
    # "pull:<peer>"; "" in older entries.
    source: str = ""
    # Bumped when the store layout changes; older entries are reconverted.
    format_version: int = FORMAT_VERSION

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        (directory / MANIFEST_NAME).write_text(text)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"bad or missing manifest {path}: {exc}") from exc
