"""The engine interface: one loaded model (or one layer range of it) on this device.

Kept small on purpose (exo's Engine is sixty lines): load, generate, measure, close.
Engines are chosen by name through `edgellm.engine.registry`, which imports only the
chosen implementation.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgellm.config import KVConfig
from edgellm.engine.types import GenerationChunk, GenerationRequest, Speeds


@dataclass(frozen=True)
class EngineConfig:
    # Model store directory of the model (config.json, model.safetensors, tokenizer).
    model_dir: Path
    # "cpu" or "cuda"; "auto" is resolved before an engine sees it.
    device: str = "cpu"
    # KV-cache blocks over IPFS (prefix cache); None or no ipfs_api: off.
    kv: KVConfig | None = None


class Engine(ABC):
    """A loaded model that turns requests into token streams."""

    @classmethod
    @abstractmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Load the model; raises a RecoverableError when it cannot."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Maximum prompt + completion tokens."""

    @abstractmethod
    def generate(
        self, request: GenerationRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """An iterator of one chunk per decoded token. Bad input raises InvalidRequest from
        this call itself (not from the iterator); the iterator raises RequestCancelled once
        `cancel` is set."""

    def calibrate(self) -> Speeds:
        """Measure prefill and decode speed on this machine (optional hook)."""
        return Speeds(0.0, 0.0)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release memory; the engine is unusable afterwards."""
