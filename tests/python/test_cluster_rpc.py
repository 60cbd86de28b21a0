"""Cluster RPCs on a real backend: bad input is INVALID_ARGUMENT and starts nothing."""

from __future__ import annotations

import grpc
import pytest

from edgellm.v1 import (
    cluster_control_pb2,
    cluster_control_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
)

TOKEN = "ab" * 32


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"token": "short"}, "token must be 64 hex characters, got 5"),
        ({"bind_address": "0.0.0.0"}, "is a wildcard"),
        ({"bind_address": "peer.example"}, "bind_address must be an IP address"),
        ({"bind_address": "203.0.113.9"}, "not an address of this machine"),
        ({"session_id": "a b"}, "session_id must be"),
        ({"peer_resource": "gpu:1"}, "peer resource must be"),
    ],
)
def test_start_head_bad_input(server, fields, message) -> None:
    stub = cluster_control_pb2_grpc.ClusterControlStub(server.channel)
    request = {"session_id": "s", "bind_address": "127.0.0.1", "token": TOKEN, **fields}
    code, details = _code(
        lambda: stub.StartClusterHead(cluster_control_pb2.StartClusterHeadRequest(**request))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details and TOKEN not in details


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"head_address": "nowhere"}, "head_address must be IP:PORT"),
        ({"head_address": "127.0.0.1:0"}, "head_address must be IP:PORT"),
        ({"peer_resource": ""}, "peer resource must be"),
        ({"token": "g" * 64}, "hex characters only"),
    ],
)
def test_join_bad_input(server, fields, message) -> None:
    stub = cluster_control_pb2_grpc.ClusterControlStub(server.channel)
    request = {
        "session_id": "s",
        "head_address": "127.0.0.1:6379",
        "token": TOKEN,
        "peer_resource": "peer:a",
        "bind_address": "127.0.0.1",
        **fields,
    }
    code, details = _code(
        lambda: stub.JoinCluster(cluster_control_pb2.JoinClusterRequest(**request))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details


def test_leave_unknown_session(server) -> None:
    stub = cluster_control_pb2_grpc.ClusterControlStub(server.channel)
    assert not stub.LeaveCluster(cluster_control_pb2.LeaveClusterRequest(session_id="nope")).left


def _generate(server, plan: inference_pb2.Plan) -> tuple[grpc.StatusCode, str]:
    stub = inference_pb2_grpc.InferenceStub(server.channel)
    request = inference_pb2.GenerateRequest(model="smollm2-135m", prompt="hi", plan=plan)
    return _code(lambda: list(stub.Generate(request)))


def _stage(peer: str, start: int, end: int) -> inference_pb2.PlanStage:
    return inference_pb2.PlanStage(
        peer_resource=peer, layer_start=start, layer_end=end, weights_cid="bafk"
    )


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (inference_pb2.Plan(session_id="s"), "plan has no stages"),
        (
            inference_pb2.Plan(session_id="s", stages=[_stage("peer:a", 0, 10)]),
            "plan covers layers [0, 10), the model has 30",
        ),
        (
            inference_pb2.Plan(
                session_id="s", stages=[_stage("peer:a", 0, 10), _stage("peer:b", 12, 30)]
            ),
            "layers must be contiguous",
        ),
        (
            inference_pb2.Plan(session_id="nope", stages=[_stage("peer:a", 0, 30)]),
            "unknown cluster session 'nope'",
        ),
    ],
)
def test_generate_bad_plan(server, plan, message) -> None:
    code, details = _generate(server, plan)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in details
