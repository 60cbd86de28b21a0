"""Concurrent requests for batching tests: each consumed on its own thread, as the gRPC
server's handler threads do."""

from __future__ import annotations

import threading

from edgellm.engine.base import Engine
from edgellm.engine.types import GenerationRequest


class Run(threading.Thread):
    """One request, consumed on its own thread; `cancel_after` tokens: then aborted."""

    def __init__(self, engine: Engine, request: GenerationRequest, cancel_after: int = 0):
        super().__init__()
        self.engine, self.request, self.cancel_after = engine, request, cancel_after
        self.cancel = threading.Event()
        self.tokens: list[int] = []
        self.chunks = []
        self.error: BaseException | None = None
        self.started_decoding = threading.Event()  # 4 tokens out

    def run(self) -> None:
        try:
            for chunk in self.engine.generate(self.request, self.cancel):
                self.chunks.append(chunk)
                self.tokens.extend(chunk.token_ids)
                if len(self.tokens) == 4:
                    self.started_decoding.set()
                if self.cancel_after and len(self.tokens) == self.cancel_after:
                    self.cancel.set()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc
        finally:
            self.started_decoding.set()


def run_all(runs: list[Run]) -> None:
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
        assert not run.is_alive()


def batched_steps(engine) -> int:
    """Decode steps the engine ran with more than one sequence (an observation)."""
    return sum(count for size, count in engine.step_sizes.items() if size > 1)
