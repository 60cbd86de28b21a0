"""The per-request spot check of cached blocks.

Blocks are checked for format, metadata, shapes and finite values (block.py), but a holder
can still serve finite K/V that are not what the model computes for those tokens. So after
the cached blocks are imported, one imported position, chosen at random, is recomputed in
place: the sessions are rewound to it, its token runs through every stage (attending to the
imported prefix before it), and the recomputed K/V of every layer are compared with the
imported ones. A mismatch means the prefix is not the model's (the checked position, or one
before it that the recompute attended to): the caller drops the whole hit, computes the
prompt, and stops trusting the holders it came from.

The recompute costs one token's forward, as much as one decode step; the recomputed row
stays in the cache (the model's own values), so on a match the sessions go on from where
the import left them. Decisions:

- one position per request, uniformly at random over the imported ones, all layers: a
  holder that forges a share f of the positions is caught with probability f per request
  (any forgery of an earlier position also shows, through attention), for one decode step
  of compute. A whole block (16 tokens) measured ~10x that on two cores, a third of the
  cached time to first token; bench `spot_check_overhead`, goal <= 5% of it;
- tolerance relative to the row's largest value: the recompute differs from the original
  prefill in rounding at most (measured identical in float32 on CPU), a forgery by its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from edgellm.kv.stage import StageCache

# Largest relative difference a recompute may show and still match, per KV dtype.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-3}
HALF_TOLERANCE = 5e-2  # float16, bfloat16


class SpotSession(StageCache, Protocol):
    """A stage session the check can rewind and run (edgellm.engine.torch.stage's)."""

    @property
    def device(self) -> torch.device:
        """Where its inputs live."""

    def forward(self, inputs: torch.Tensor, logits: bool = True) -> torch.Tensor:
        """Token ids [1, n] (first stage) or hidden states -> the next stage's input
        (logits=False: no LM head on the last stage)."""

    def seek(self, position: int) -> None:
        """Make [0, position) the cached part; rows beyond are kept in the buffer."""

    def reset(self) -> None:
        """Empty the cache (a failed check: the prompt is computed from position 0)."""


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, HALF_TOLERANCE)


def recompute_difference(
    sessions: Sequence[SpotSession], token_ids: Sequence[int], position: int
) -> float:
    """Recompute `position` of sessions that hold it, and return the largest difference
    between imported and recomputed K/V relative to the largest imported value. The
    sessions are left at the position they were at."""
    filled = sessions[0].position
    start, end = position, position + 1
    imported = [s.export_kv(start, end) for s in sessions]
    for session in sessions:
        session.seek(start)
    try:
        x = torch.tensor([list(token_ids[start:end])], device=sessions[0].device)
        for session in sessions:
            x = session.forward(x, logits=False)
        recomputed = [s.export_kv(start, end) for s in sessions]
    finally:
        for session in sessions:
            session.seek(filled)
    worst = 0.0
    for stage_in, stage_out in zip(imported, recomputed, strict=True):
        for (k, v), (k2, v2) in zip(stage_in, stage_out, strict=True):
            for a, b in ((k, k2), (v, v2)):
                scale = float(b.abs().max()) + 1e-6
                worst = max(worst, float((a.float() - b.float()).abs().max()) / scale)
    return worst
