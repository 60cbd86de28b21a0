"""Continuous batching: the requests an engine serves at once decode as one batch.

One thread per engine runs the loop. Each turn it admits waiting requests that fit (a
free slot, FIFO), runs each one's prefill alone (its first token is streamed at once),
then runs one decode step of every active sequence together (`StageRunner.forward_batch`:
one pass through the layers, on every stage of a split). A sequence that finishes, is
aborted or whose consumer went away leaves the batch at once and frees its slot.

A request longer than a slot (prompt + max_tokens > Slots.positions) waits until the
batch has drained, then runs alone with a cache of its own; requests behind it wait (FIFO,
so it is not starved). Nothing that does not fit crashes the engine: it waits.

A failing decode step (a stage actor died) fails every sequence of the batch with the
same error, as one request fails today, so each of their callers fails over.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from edgellm.engine.runner import StageRunner
from edgellm.engine.torch.generation import Sequence
from edgellm.engine.types import GenerationChunk, PreparedRequest
from edgellm.errors import RequestCancelled, Unavailable

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Entry:
    job: PreparedRequest
    cancel: threading.Event
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    gone: threading.Event = field(default_factory=threading.Event)  # the consumer left

    def dropped(self) -> bool:
        return self.cancel.is_set() or self.gone.is_set()

    def fail(self, exc: BaseException) -> None:
        # A copy each, so callers in other threads never re-raise one shared instance.
        self.out.put(copy.copy(exc))


@dataclass(eq=False)
class _Running:
    entry: _Entry
    seq: Sequence


# How often a request waiting for its next token checks its cancel event. A batch step
# waits on every stage; a stage behind a cut link never answers and Ray takes tens of
# seconds to declare its node dead, but the requester notices first (heartbeats), cancels
# and fails over, and the request must leave at once, not when Ray gives up.
CANCEL_POLL_S = 0.2


def _next_item(entry: _Entry):
    """The entry's next chunk or error; RequestCancelled as soon as it is cancelled."""
    while True:
        try:
            return entry.out.get(timeout=CANCEL_POLL_S)
        except queue.Empty:
            if entry.cancel.is_set():
                raise RequestCancelled(
                    f"request {entry.job.request_id} was aborted while its step ran"
                ) from None


class Batcher:
    def __init__(self, runner: StageRunner, make: Callable[[PreparedRequest], Sequence]):
        self._runner = runner
        self._make = make  # a Sequence for a request (the engine's tokenizer, prefix cache)
        self._cond = threading.Condition()
        self._waiting: deque[_Entry] = deque()
        self._active: list[_Running] = []
        self._solo = False  # the active sequence has a cache of its own: nothing joins it
        self._closed = False
        self._thread: threading.Thread | None = None
        # Decode steps run, by batch size (observed by tests and benchmarks).
        self.step_sizes: Counter[int] = Counter()

    def submit(
        self, job: PreparedRequest, cancel: threading.Event | None = None
    ) -> Iterator[GenerationChunk]:
        """The request's chunks; it joins the queue when the iterator is first advanced,
        and leaves the batch when the iterator is closed or `cancel` is set (raising
        RequestCancelled)."""
        entry = _Entry(job, cancel or threading.Event())
        with self._cond:
            if self._closed:
                raise Unavailable("the engine is closed")
            self._waiting.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            while True:
                item = _next_item(entry)
                if isinstance(item, BaseException):
                    raise item
                if entry.cancel.is_set():  # tokens the batch made before it noticed
                    raise RequestCancelled(f"request {job.request_id} was aborted")
                chunk = item() if callable(item) else item
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            entry.gone.set()
            with self._cond:
                self._cond.notify()

    def close(self) -> None:
        """Fail what is queued or running; the batcher is unusable afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the loop (the batcher's thread) ------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while (admitted := self._next()) is not None:
                    for entry in admitted:
                        self._start(entry)
                    self._drop_left()
                    if self._active:
                        self._step()
        except BaseException as exc:  # noqa: BLE001 - no request may wait forever
            log.exception("batcher failed")
            self._fail_all(Unavailable(f"the engine's batcher failed: {exc!r}"))
            raise
        self._fail_all(Unavailable("the engine is closed"))

    def _next(self) -> list[_Entry] | None:
        """Wait for work; the requests to admit now (None: closed)."""
        with self._cond:
            while not self._closed and not self._active and not self._waiting_live():
                self._cond.wait()
            if self._closed:
                return None
            return self._admit()

    def _waiting_live(self) -> bool:
        for entry in list(self._waiting):
            if entry.dropped():
                self._waiting.remove(entry)
                entry.fail(RequestCancelled(f"request {entry.job.request_id} was aborted"))
        return bool(self._waiting)

    def _admit(self) -> list[_Entry]:
        slots = self._runner.slots
        admitted: list[_Entry] = []
        self._waiting_live()
        while self._waiting and not self._solo:
            head = self._waiting[0]
            positions = len(head.job.prompt_ids) + head.job.max_tokens
            if positions > slots.positions:  # its own cache, alone once the batch drains
                if self._active or admitted:
                    break
                self._solo = True
            elif len(self._active) + len(admitted) >= slots.count:
                break
            admitted.append(self._waiting.popleft())
        return admitted

    def _start(self, entry: _Entry) -> None:
        seq = self._make(entry.job)
        try:
            chunk = seq.start()
        except Exception as exc:  # noqa: BLE001 - this request fails, the batch goes on
            seq.close()
            self._solo = bool(self._solo and self._active)
            entry.fail(exc)
            return
        running = _Running(entry, seq)
        if seq.finished:
            self._leave(running)  # before its last chunk: a finished stream holds nothing
        else:
            self._active.append(running)
        entry.out.put(chunk)

    def _drop_left(self) -> None:
        for running in [r for r in self._active if r.entry.dropped()]:
            self._active.remove(running)
            self._leave(running)
            job = running.entry.job
            running.entry.fail(RequestCancelled(f"request {job.request_id} was aborted"))

    def _step(self) -> None:
        batch = list(self._active)
        self.step_sizes[len(batch)] += 1
        tokens = torch.tensor([[r.seq.token] for r in batch], device=self._runner.device)
        try:
            logits = self._runner.forward_batch([r.seq.session for r in batch], tokens)
        except Exception as exc:  # noqa: BLE001 - every sequence of the batch fails over
            for running in batch:
                self._active.remove(running)
                self._leave(running)
                running.entry.fail(exc)
            return
        for index, running in enumerate(batch):
            running.seq.max_batch = max(running.seq.max_batch, len(batch))
            try:
                chunk = running.seq.advance(logits[index : index + 1])
            except Exception as exc:  # noqa: BLE001 - e.g. the detokenizer on one sequence
                self._active.remove(running)
                self._leave(running)
                running.entry.fail(exc)
                continue
            if running.seq.finished:
                self._active.remove(running)
                self._leave(running)
            running.entry.out.put(chunk)

    def _leave(self, running: _Running) -> None:
        running.seq.close()
        if not self._active:
            self._solo = False

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            entries = [r.entry for r in self._active] + list(self._waiting)
            for running in self._active:
                running.seq.close()
            self._active.clear()
            self._waiting.clear()
        for entry in entries:
            entry.fail(exc)
