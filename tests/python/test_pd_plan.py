"""Plan validation for both plan kinds: pipelines (unchanged) and prefill/decode plans."""

from __future__ import annotations

import pytest

from edgellm.cluster.plan import Plan, PlanStage, StageRole
from edgellm.engine.torch.stage import LayerRange
from edgellm.errors import InvalidRequest
from edgellm.server import messages
from edgellm.v1 import inference_pb2

P, D = StageRole.PREFILL, StageRole.DECODE
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def _plan(*stages: tuple) -> Plan:
    return Plan(
        "s1",
        tuple(
            PlanStage(peer, LayerRange(a, b), cid, role)
            for peer, a, b, role, cid in (s + (CID,) if len(s) == 4 else s for s in stages)
        ),
    )


def test_prefill_decode_plan_is_valid() -> None:
    plan = _plan(("peer:a", 0, 30, P), ("peer:b", 0, 30, D))
    plan.validate(30)
    assert plan.disaggregated


def test_pipeline_plan_is_still_valid_and_not_disaggregated() -> None:
    plan = _plan(("peer:a", 0, 13, StageRole.PIPELINE), ("peer:b", 13, 30, StageRole.PIPELINE))
    plan.validate(30)
    assert not plan.disaggregated


BAD = [
    ((("peer:a", 0, 30, D), ("peer:b", 0, 30, P)), "PREFILL then DECODE; got DECODE, PREFILL"),
    ((("peer:a", 0, 30, P),), "exactly two stages, PREFILL then DECODE; got PREFILL"),
    ((("peer:a", 0, 30, D),), "got DECODE"),
    (
        (("peer:a", 0, 30, P), ("peer:b", 0, 30, D), ("peer:c", 0, 30, D)),
        "got PREFILL, DECODE, DECODE",
    ),
    ((("peer:a", 0, 30, P), ("peer:b", 0, 30, StageRole.PIPELINE)), "got PREFILL, PIPELINE"),
    ((("peer:a", 0, 15, P), ("peer:b", 15, 30, D)), "holds every layer [0, 30), got [0, 15)"),
    ((("peer:a", 0, 30, P), ("peer:b", 0, 29, D)), "stage 1 (DECODE): a prefill/decode stage"),
    ((("peer:a", 0, 31, P), ("peer:b", 0, 31, D)), "must lie within [0, 30)"),
    ((("peer:a", 0, 30, P), ("peer:a", 0, 30, D)), "different peers, both are peer:a"),
    ((("a", 0, 30, P), ("peer:b", 0, 30, D)), "peer resource must be"),
    ((("peer:a", 0, 30, P, CID), ("peer:b", 0, 30, D, "bafkother")), "different weights CIDs"),
    ((("peer:a", 0, 30, P, ""), ("peer:b", 0, 30, D, "")), "weights_cid is empty"),
    ((("peer:a", 0, 30, P), ("peer:b", 0, 30, 7)), "plan stage 1: unknown role 7"),
]


@pytest.mark.parametrize(("stages", "message"), BAD)
def test_bad_prefill_decode_plans_are_invalid(stages, message) -> None:
    with pytest.raises(InvalidRequest) as info:
        _plan(*stages).validate(30)
    assert message in str(info.value)


def test_roles_come_from_the_wire() -> None:
    msg = inference_pb2.Plan(
        session_id="s1",
        stages=[
            inference_pb2.PlanStage(
                peer_resource="peer:a",
                layer_start=0,
                layer_end=30,
                weights_cid=CID,
                role=inference_pb2.STAGE_ROLE_PREFILL,
            ),
            inference_pb2.PlanStage(
                peer_resource="peer:b",
                layer_start=0,
                layer_end=30,
                weights_cid=CID,
                role=inference_pb2.STAGE_ROLE_DECODE,
            ),
        ],
    )
    plan = messages.plan(msg)
    assert [s.role for s in plan.stages] == [P, D]
    plan.validate(30)
    # A pipeline plan leaves role unset (0): PIPELINE.
    for stage in msg.stages:
        stage.ClearField("role")
    assert {s.role for s in messages.plan(msg).stages} == {StageRole.PIPELINE}


def test_unknown_role_number_from_the_wire_is_refused() -> None:
    stage = inference_pb2.PlanStage(
        peer_resource="peer:a", layer_start=0, layer_end=30, weights_cid=CID
    )
    stage.role = 9  # proto3 enums are open: the number arrives as is
    plan = messages.plan(inference_pb2.Plan(session_id="s1", stages=[stage]))
    with pytest.raises(InvalidRequest, match="unknown role 9"):
        plan.validate(30)


def test_proto_numbers_match() -> None:
    assert int(StageRole.PIPELINE) == inference_pb2.STAGE_ROLE_PIPELINE
    assert int(StageRole.PREFILL) == inference_pb2.STAGE_ROLE_PREFILL
    assert int(StageRole.DECODE) == inference_pb2.STAGE_ROLE_DECODE
