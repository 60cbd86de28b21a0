"""Recent handoffs of a cluster session, for the decode peer that replaces a lost one.

When a P/D decode peer dies mid-generation, the node fails the request over: the same
cluster session gets a new plan (the same prefill peer, a new decode peer) and the request
again, with the tokens generated so far appended (resume_token_ids). The prompt's KV blocks
are still in the prefill peer's Kubo, named by the manifest of the lost request's handoff,
so the new decode peer fetches them and computes only what follows them (the prompt's tail
and the generated tokens) instead of the prefill peer computing everything again.

`RecentHandoffs` is that memory, one per cluster session (edgellm.cluster.manager), so it
outlives the engine of the lost plan. Every P/D request's runner keeps its handoff once
the decode peer has taken it. Only a later runner of the session takes one (a failover
is the only thing that gives a cluster session a new plan), and only for its own model,
so a request repeated on the same plan still runs as P/D does (P computes, D fetches); a
taken handoff is gone until the runner that took it keeps it again. A handoff is taken
only by a request whose tokens start with its prompt and go on past it (a replay with the
tokens generated so far; a lost decode peer that had produced nothing is replayed as a
fresh request). The blocks are checked as on any handoff: a fetch that fails, or blocks
that do not check out, cost a recompute with a warning, never the request.

Nothing here imports torch, so the manager holds one without loading the engine.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgellm.cluster.disaggregated.messages import Handoff

# Handoffs kept per cluster session at most (the oldest go first): a request fails over
# at most twice, and a P/D cluster runs one request at a time.
MAX_KEPT = 4


@dataclass(frozen=True)
class Kept:
    """A handoff, the prompt its manifest covers (whole blocks of), and who kept it."""

    prompt: tuple[int, ...]
    handoff: Handoff
    model: str
    runner: str


class RecentHandoffs:
    """The last few handoffs of a cluster session's P/D requests, by prompt."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self._limit = limit
        self._kept: OrderedDict[tuple[str, tuple[int, ...]], Kept] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, runner: str, model: str, prompt: Sequence[int], handoff: Handoff) -> None:
        """Keep a handoff whose manifest covers `prompt`'s whole blocks (none: ignored)."""
        if not handoff.manifest or not prompt:
            return
        kept = Kept(tuple(prompt), handoff, model, runner)
        with self._lock:
            key = (model, kept.prompt)
            self._kept.pop(key, None)
            self._kept[key] = kept
            while len(self._kept) > self._limit:
                self._kept.popitem(last=False)

    def take(self, runner: str, model: str, tokens: Sequence[int]) -> Kept | None:
        """The handoff another runner kept for `model` whose prompt `tokens` start with
        and go on past (the longest), removed; or None."""
        tokens = tuple(tokens)
        with self._lock:
            fits = [
                k
                for k in self._kept.values()
                if k.runner != runner
                and k.model == model
                and len(k.prompt) < len(tokens)
                and tokens[: len(k.prompt)] == k.prompt
            ]
            if not fits:
                return None
            best = max(fits, key=lambda k: len(k.prompt))
            del self._kept[(model, best.prompt)]
            return best

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)
