"""How a driver calls stage actors: Ray's remote calls, or plain in-process calls.

The P/D runner (edgellm.cluster.disaggregated.driver) and a chain's prefix cache
(edgellm.cluster.stage_prefix) submit actor calls through a `Calls`, so the same driver
code runs over Ray and, in tests, over in-process actors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from ray.exceptions import RayError, RayTaskError

from edgellm.cluster import wire
from edgellm.errors import ClusterError, EdgeLLMError

log = logging.getLogger(__name__)


def ray_error(exc: RayError, what: str) -> EdgeLLMError:
    """Our own error raised inside an actor, or a ClusterError saying what failed."""
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    if isinstance(cause, EdgeLLMError):
        return type(cause)(str(cause))
    text = " ".join(str(exc).split())
    return ClusterError(f"{what}: {text[-500:]}")


class Calls(Protocol):
    """How a driver calls stage actors: Ray's remote calls, or plain calls.
    Every failure is an EdgeLLMError, so the runner catches exactly that."""

    def submit(self, actor: Any, method: str, *args: Any) -> Any:
        """Start `actor.method(*args)`; an argument may be another call's handle. What the
        call raises surfaces in `get`; an EdgeLLMError here means it could not start."""

    def get(self, handle: Any, what: str) -> Any:
        """The call's result; raises an EdgeLLMError saying `what` failed (the actor's own
        EdgeLLMError as it was, anything else as a ClusterError)."""

    def done(self, handle: Any) -> bool:
        """Whether the call has finished (either way)."""

    def kill(self, actors: Sequence[Any]) -> None:
        """Stop the actors."""

    def drain(self, actors: Sequence[Any], timeout_s: float) -> bool:
        """Before stopping them: let the actors finish storing their KV blocks, waiting
        at most about `timeout_s`; whether all did (a lost or silent actor: False)."""


class RayCalls:
    """Tensors travel as arrays both ways (edgellm.cluster.wire)."""

    def submit(self, actor: Any, method: str, *args: Any) -> Any:
        try:
            return getattr(actor, method).remote(*(wire.pack(a) for a in args))
        except RayError as exc:
            raise ray_error(exc, f"submitting {method}") from None

    def get(self, handle: Any, what: str) -> Any:
        try:
            return wire.unpack(ray.get(handle))
        except RayError as exc:
            raise ray_error(exc, what) from None

    def done(self, handle: Any) -> bool:
        ready, _ = ray.wait([handle], timeout=0)
        return bool(ready)

    def kill(self, actors: Sequence[Any]) -> None:
        kill(actors)

    def drain(self, actors: Sequence[Any], timeout_s: float) -> bool:
        if not actors:
            return True
        try:
            done = ray.get(
                [a.prefix_drain.remote(timeout_s) for a in actors], timeout=timeout_s + 5.0
            )
        except (RayError, TimeoutError) as exc:  # a lost stage: the others' stores may be cut
            log.debug("kv: draining the stages: %s", exc)
            return False
        return all(done)


def kill(actors: Sequence[Any]) -> None:
    """Stop the actors; one that cannot be stopped any more (its node gone, or this process
    no longer the cluster's driver: a replaced plan closing after its session ended) is
    left, with a debug line."""
    for actor in actors:
        try:
            ray.kill(actor)
        except RayError as exc:
            log.debug("cluster: an actor could not be stopped (gone already): %s", exc)


@dataclass
class _Done:
    value: Any = None
    error: BaseException | None = None


class LocalCalls:
    """In-process actors (tests, and a second transport later): each call runs at once."""

    def submit(self, actor: Any, method: str, *args: Any) -> _Done:
        try:
            resolved = [self.get(a, "") if isinstance(a, _Done) else a for a in args]
            return _Done(getattr(actor, method)(*resolved))
        except Exception as exc:  # noqa: BLE001 - held for get(), as Ray holds a task's error
            return _Done(error=exc)

    def get(self, handle: _Done, what: str) -> Any:
        error = handle.error
        if isinstance(error, EdgeLLMError):
            raise error
        if error is not None:  # as ray_error reports an actor's non-EdgeLLMError
            raise ClusterError(f"{what}: {type(error).__name__}: {error}") from error
        return handle.value

    def done(self, handle: _Done) -> bool:
        return True

    def kill(self, actors: Sequence[Any]) -> None:
        return None

    def drain(self, actors: Sequence[Any], timeout_s: float) -> bool:
        try:
            return all([a.prefix_drain(timeout_s) for a in actors])
        except Exception as exc:  # noqa: BLE001 - as RayCalls reports a lost stage
            log.debug("kv: draining the stages: %s", exc)
            return False


class AfterOpen:
    """A session's calls, whose first `get` first takes the replies of the stages' `open`.

    Opening a request's session on the stages is then not a round trip of its own: a stage
    runs one caller's calls in the order they were submitted, so the session's first call
    runs after its open on every stage, and the open's reply is there by the time that
    call's is. A failed open is the error every `get` raises from then on: the later calls
    fail only because the session is missing, and a caller that tolerates one failed call
    (the prefix cache's fetch) must not hide it."""

    def __init__(self, calls: Calls, opening: Sequence[Any]) -> None:
        self.calls = calls
        self.opening = list(opening)
        self.failed: EdgeLLMError | None = None

    @classmethod
    def open(cls, calls: Calls, actors: Sequence[Any], sid: str, positions: int) -> AfterOpen:
        """Submit session `sid`'s open (room for `positions`) to every stage; the calls."""
        return cls(calls, [calls.submit(a, "open", sid, positions) for a in actors])

    def submit(self, actor: Any, method: str, *args: Any) -> Any:
        return self.calls.submit(actor, method, *args)

    def get(self, handle: Any, what: str) -> Any:
        opening, self.opening = self.opening, []
        try:
            for open_handle in opening:
                self.calls.get(open_handle, "opening a stage session failed")
        except EdgeLLMError as exc:
            self.failed = exc
        if self.failed is not None:
            raise self.failed
        return self.calls.get(handle, what)

    def done(self, handle: Any) -> bool:
        return self.calls.done(handle)

    def kill(self, actors: Sequence[Any]) -> None:
        self.calls.kill(actors)

    def drain(self, actors: Sequence[Any], timeout_s: float) -> bool:
        return self.calls.drain(actors, timeout_s)
