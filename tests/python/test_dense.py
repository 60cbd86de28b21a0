"""Batched decode steps run their dense layers through oneDNN (engine/torch/dense.py);
everything else keeps transformers' own `F.linear`, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from edgellm.engine.runner import Slots
from edgellm.engine.torch import dense
from edgellm.engine.torch.stage import LayerRange, Stage, forward_batch

PROMPT = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
ONEDNN = "mkldnn::_linear_pointwise"


def _ops(run) -> tuple[object, dict[str, int]]:
    """What `run()` returns, and how many times each op ran inside it."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = run()
    return out, {e.key: e.count for e in prof.key_averages()}


def _lone(stage: Stage) -> torch.Tensor:
    session = stage.session(64)
    try:
        session.forward(PROMPT)
        return session.forward(torch.tensor([[42]]))
    finally:
        session.close()


@pytest.mark.parametrize("layers", [None, LayerRange(0, 15)], ids=["whole", "first-stage"])
def test_batched_steps_take_onednn_and_lone_calls_stay_exact(
    store_dir: Path, layers: LayerRange | None
) -> None:
    stage = Stage(store_dir, layers, slots=Slots(3, 64))
    assert stage.batch_dense  # this machine: x86 CPU wheel, float32
    linears = sum(isinstance(m, nn.Linear) for m in stage.model.modules())
    before, ops = _ops(lambda: _lone(stage))  # logits, or the first stage's hidden states
    assert ONEDNN not in ops
    sessions = [stage.session(64) for _ in range(3)]
    try:
        with torch.inference_mode():
            for session in sessions:
                session.forward(PROMPT)
            out, ops = _ops(lambda: forward_batch(sessions, torch.tensor([[42]] * 3)))
        # Every linear layer once per step, and the LM head on the last stage.
        assert ops.get(ONEDNN) == linears + (1 if stage.is_last else 0)
        # Three identical sequences in one batched step: three identical rows.
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        # A lone sequence afterwards still takes transformers' F.linear, bit for bit.
        after, ops = _ops(lambda: _lone(stage))
        assert ONEDNN not in ops and torch.equal(after, before)
        # The batched row is the lone one up to the GEMM's summation order.
        assert (out[0] - before[0]).abs().max().item() < 1e-3
        if stage.is_last:
            assert int(out[0].argmax()) == int(before[0].argmax())
    finally:
        for session in sessions:
            session.close()


def test_outside_a_batched_step_nothing_changes() -> None:
    assert not dense.supported(torch.device("cpu"), torch.bfloat16)
    assert not dense.supported(torch.device("meta"), torch.float32)
    x, w = torch.randn(2, 4), torch.randn(3, 4)
    layer = nn.Linear(4, 3)
    assert dense.install(nn.Sequential(layer)) == 1
    expected = nn.functional.linear(x, layer.weight, layer.bias)
    with dense.batched(False):  # an unsupported stage: its batched step is as before
        assert torch.equal(layer(x), expected)
        assert torch.equal(dense.head_logits(x, w), nn.functional.linear(x, w))
    with dense.batched(True):
        assert (layer(x) - expected).abs().max().item() < 1e-5
