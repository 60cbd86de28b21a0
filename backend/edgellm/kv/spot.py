"""The per-request spot check of cached blocks, folded into the prefill of the rest.

Blocks are checked for format, metadata, shapes and finite values (block.py), but a holder
can still serve finite K/V that are not what the model computes for those tokens. So after
the cached blocks are imported, one imported position p, chosen at random, is recomputed
and its K/V of every layer compared with the imported ones. A mismatch means the prefix is
not the model's (position p, or one before it that the recompute attended to): the caller
drops the whole hit, computes the prompt, and stops trusting the holders it came from.

The recompute rides in the forward that computes the rest of the prompt: p's token is one
more row after the prompt's last, with position id p and a mask row that sees only the
cached [0, p) and itself; the prompt's rows do not see it (causal). Its K/V land in the
buffer row after the prompt's, which the session then leaves out of the cache (the next
decode step overwrites it), and one vectorised op compares that row with row p. Decisions:

- folded, not a forward of its own: a separate one-token forward cost what a decode step
  does (every layer's weights read, 30 layers of Python), ~15% of the cached time to first
  token on two cores (bench `spot_check_overhead`, goal <= 5%); as one more row of the
  prefill it costs that row's arithmetic only;
- one position per request, uniformly at random over the imported ones, all layers: a
  holder that forges a share f of the positions is caught with probability f per request
  (any forgery of an earlier position also shows, through attention);
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
    """A stage session the check runs through (edgellm.engine.torch.stage's)."""

    @property
    def device(self) -> torch.device:
        """Where its inputs live."""

    def forward(
        self, inputs: torch.Tensor, logits: bool = True, check: int | None = None
    ) -> torch.Tensor:
        """Token ids [1, n] (first stage) or hidden states -> the next stage's input, or
        the logits of the last position on the last stage. With `check`, the last row
        recomputes cached position `check` and is left out of the cache."""

    def difference(self, position: int) -> float:
        """The largest difference between the K/V of cached `position` and of the row
        just after the cache (a `check` row), relative to that row's largest value."""

    def reset(self) -> None:
        """Empty the cache (a failed check: the prompt is computed from position 0)."""


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, HALF_TOLERANCE)


def mask_and_positions(
    start: int, n: int, check: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4D boolean mask [1, 1, n + 1, start + n + 1] and position ids [1, n + 1] of n
    prompt rows from `start` followed by a row recomputing position `check`."""
    keys = torch.arange(start + n + 1, device=device)
    rows = torch.arange(start, start + n, device=device)
    prompt = keys.unsqueeze(0) <= rows.unsqueeze(1)
    checked = (keys < check) | (keys == start + n)
    mask = torch.cat([prompt, checked.unsqueeze(0)]).view(1, 1, n + 1, start + n + 1)
    positions = torch.cat([rows, torch.tensor([check], device=device)]).unsqueeze(0)
    return mask, positions


def prefill(
    sessions: Sequence[SpotSession], token_ids: Sequence[int], position: int
) -> tuple[torch.Tensor, float]:
    """Compute token_ids past the sessions' cached prefix, with cached `position`
    recomputed in the same forward: the logits of the prompt's last position, and the
    recompute's largest relative difference from the cached K/V."""
    start = sessions[0].position
    rows = [*token_ids[start:], token_ids[position]]
    x = torch.tensor([rows], device=sessions[0].device)
    for session in sessions:
        x = session.forward(x, check=position)
    return x, max(session.difference(position) for session in sessions)
