"""The dense layers of a batched decode step run through oneDNN instead of the BLAS.

Why: torch's CPU matmul hands a float32 `linear` to its BLAS (MKL in the PyPI wheels).
For the few rows of a decode step of several sequences (2..8 rows against weights that do
not fit in cache), MKL's GEMM on this machine's CPU (AMD EPYC, AVX-512) took ~70 ms of a
~85 ms step of 8 sequences of SmolLM2-135M, against ~45 ms for one row. oneDNN (torch's
`mkldnn` ops, in the CPU wheels) picks its kernels by the CPU's instruction set. Measured
with bench/batch_figures.py, two alternating rounds: 8 concurrent requests decoded at 77
and 83 tokens/s in total through MKL, 119 and 109 through oneDNN on the same weights
(`batch_throughput_ratio` 4.3, 4.7 -> 7.8, 6.6).

oneDNN with the weights reordered into its blocked layout once (`_reorder_linear_weight`)
was faster still (151 and 166 tokens/s), but that is a second copy of every dense weight,
and a volunteer's memory is what decides which layers it can hold; so the weights are used
as they are, and nothing is allocated.

What stays as it was: every call outside a batched step (a lone sequence's decode, every
prefill, the spot check, `generate` itself) goes through `F.linear`, so a single request's
logits are bit-equal to transformers' and its KV blocks are the ones any other peer
computes. A batched step was never bit-exact (batch.py: a GEMM over b rows sums in another
order than one row's GEMV); oneDNN's sums differ from MKL's in the same last bits, and the
batch tests check every sequence's tokens against `generate` as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

# Set for the duration of a batched step in the thread running it (a ContextVar is per
# thread), so a lone request on another thread keeps the exact path.
_BATCHED: ContextVar[bool] = ContextVar("edgellm_batched_dense", default=False)


def supported(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN's float32 linear is there (the x86 and ARM CPU wheels) for this stage."""
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class _BatchedLinear(nn.Linear):
    """nn.Linear that runs through oneDNN inside `batched()`, as itself elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _BATCHED.get():
            return _onednn(x, self.weight, self.bias)
        return super().forward(x)


def install(model: nn.Module) -> int:
    """Let `model`'s linear layers take the oneDNN path in batched steps; how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = _BatchedLinear
            count += 1
    return count


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@contextmanager
def batched(enabled: bool = True) -> Iterator[None]:
    """Inside, installed linear layers and `head_logits` run through oneDNN (when
    `enabled`: the stage is `supported`)."""
    token = _BATCHED.set(enabled)
    try:
        yield
    finally:
        _BATCHED.reset(token)


def head_logits(hidden: torch.Tensor, lm_head: torch.Tensor) -> torch.Tensor:
    """The LM head over a step's rows: through oneDNN inside `batched()`."""
    if _BATCHED.get():
        return _onednn(hidden, lm_head, None)
    return nn.functional.linear(hidden, lm_head)
