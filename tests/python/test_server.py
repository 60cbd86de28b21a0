"""The gRPC server as the Go node sees it: a subprocess on a unix socket."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgellm.server.listen import check_listen
from edgellm.v1 import inference_pb2, inference_pb2_grpc, model_control_pb2, model_control_pb2_grpc

from .conftest import MODEL_ID

OK_PROMPT = "What is the capital of France?"


def _inference(server) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(server.channel)


def _control(server) -> model_control_pb2_grpc.ModelControlStub:
    return model_control_pb2_grpc.ModelControlStub(server.channel)


def _generate(server, **fields) -> list[inference_pb2.GenerateResponse]:
    fields.setdefault("model", MODEL_ID)
    return list(_inference(server).Generate(inference_pb2.GenerateRequest(**fields), timeout=300))


def test_health_serving_for_all_services(server) -> None:
    stub = health_pb2_grpc.HealthStub(server.channel)
    services = ("Inference", "ModelControl", "ClusterControl", "KVControl")
    for name in ("", *(f"edgellm.v1.{s}" for s in services)):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_load_model_streams_progress_then_info(server) -> None:
    progress = list(_control(server).LoadModel(model_control_pb2.LoadModelRequest(model=MODEL_ID)))
    assert progress[-1].HasField("model")
    info = progress[-1].model
    assert (info.id, info.loaded, info.in_store, info.num_layers) == (
        MODEL_ID,
        True,
        True,
        30,
    )
    assert info.weights_cid.startswith("bafy")
    status = _control(server).Status(model_control_pb2.StatusRequest())
    assert (status.device, status.engine) == ("cpu", "torch")
    assert status.memory_total_bytes >= status.memory_free_bytes > 0
    assert status.decode_tokens_per_s > 0 and status.prefill_tokens_per_s > 0
    assert [m.id for m in status.loaded_models] == [MODEL_ID]


def test_generate_streams_one_response_per_token(server) -> None:
    responses = _generate(server, prompt=OK_PROMPT, request_id="r1")
    assert "".join(r.text for r in responses) == "The capital of France is Paris."
    assert all(len(r.token_ids) == 1 and r.request_id == "r1" for r in responses)
    last = responses[-1]
    assert last.finish_reason == inference_pb2.FINISH_REASON_STOP
    assert last.usage.completion_tokens == len(responses)
    assert last.usage.prompt_tokens > 0 and last.timings.ttft_ms > 0


def test_stop_string_over_grpc(server) -> None:
    sampling = inference_pb2.SamplingParams(stop=["Paris"])
    responses = _generate(server, prompt=OK_PROMPT, sampling=sampling)
    assert "".join(r.text for r in responses) == "The capital of France is "
    assert responses[-1].finish_reason == inference_pb2.FINISH_REASON_STOP_STRING


def test_messages_and_seeded_sampling(server) -> None:
    messages = inference_pb2.ChatMessages(
        messages=[inference_pb2.ChatMessage(role="user", content="Name a colour.")]
    )
    sampling = inference_pb2.SamplingParams(temperature=0.9, seed=42, max_tokens=8)
    first = _generate(server, messages=messages, sampling=sampling)
    again = _generate(server, messages=messages, sampling=sampling)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    assert first[-1].usage.completion_tokens <= 8


S = inference_pb2.SamplingParams
BAD_REQUESTS = [
    ({"model": "no-such-model", "prompt": "hi"}, grpc.StatusCode.NOT_FOUND),
    ({"prompt": ""}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "  \n "}, grpc.StatusCode.INVALID_ARGUMENT),
    ({}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "sampling": S(max_tokens=0)}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "sampling": S(max_tokens=-3)}, grpc.StatusCode.INVALID_ARGUMENT),
    (
        {"prompt": "hi", "sampling": S(max_tokens=9000)},
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    ({"prompt": "hi", "sampling": S(temperature=3)}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "sampling": S(top_p=0)}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "sampling": S(top_p=1.01)}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "sampling": S(stop=[""])}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"raw_prompt": "word " * 9000}, grpc.StatusCode.INVALID_ARGUMENT),
    ({"prompt": "hi", "resume_token_ids": [1, 49152]}, grpc.StatusCode.INVALID_ARGUMENT),
]


@pytest.mark.parametrize(("fields", "code"), BAD_REQUESTS)
def test_bad_requests_get_status_codes(server, fields, code) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _generate(server, **fields)
    assert info.value.code() == code
    assert "\n" not in info.value.details()


def test_resume_continues_the_greedy_answer(server) -> None:
    """A failover replays the tokens produced so far (resume_token_ids): the rest of the
    answer equals the uninterrupted one, and usage counts the whole answer."""
    story = "Write a short story about a robot who learns to paint."
    sampling = S(max_tokens=12)
    full = _generate(server, prompt=story, sampling=sampling)
    ids = [t for r in full for t in r.token_ids]
    assert len(ids) == 12 and full[-1].finish_reason == inference_pb2.FINISH_REASON_LENGTH
    k = 5
    rest = _generate(server, prompt=story, sampling=sampling, resume_token_ids=ids[:k])
    assert [t for r in rest for t in r.token_ids] == ids[k:]
    head = "".join(r.text for r in full[:k])
    assert head + "".join(r.text for r in rest) == "".join(r.text for r in full)
    assert rest[-1].finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert rest[-1].usage.completion_tokens == 12
    assert rest[-1].usage.prompt_tokens == full[-1].usage.prompt_tokens
    # Everything was produced already: the answer ends at once.
    done = _generate(server, prompt=story, sampling=sampling, resume_token_ids=ids)
    assert [list(r.token_ids) for r in done] == [[]]
    assert done[-1].finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert done[-1].usage.completion_tokens == 12


def test_abort_cancels_stream_and_next_request_works(server) -> None:
    sampling = inference_pb2.SamplingParams(max_tokens=400)
    request = inference_pb2.GenerateRequest(
        model=MODEL_ID,
        raw_prompt="1, 2, 3, 4, 5,",
        request_id="long",
        sampling=sampling,
    )
    stream = _inference(server).Generate(request, timeout=300)
    next(stream)  # running now
    assert _inference(server).Abort(inference_pb2.AbortRequest(request_id="long")).aborted
    with pytest.raises(grpc.RpcError) as info:
        list(stream)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert not _inference(server).Abort(inference_pb2.AbortRequest(request_id="long")).aborted
    assert "Paris" in "".join(r.text for r in _generate(server, prompt=OK_PROMPT))


def test_concurrent_requests_do_not_mix(server) -> None:
    results: dict[str, str] = {}

    def run(name: str, prompt: str) -> None:
        results[name] = "".join(
            r.text for r in _generate(server, raw_prompt=prompt, sampling=S(max_tokens=12))
        )

    prompts = {"a": "The first law of motion says", "b": "def add(a, b):"}
    threads = [threading.Thread(target=run, args=item) for item in prompts.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, prompt in prompts.items():
        alone = "".join(
            r.text for r in _generate(server, raw_prompt=prompt, sampling=S(max_tokens=12))
        )
        assert results[name] == alone


def test_list_models(server) -> None:
    listed = _control(server).ListModels(model_control_pb2.ListModelsRequest()).models
    models = {m.id: m for m in listed}
    # The registry's models, in the store or not (gemma3-270m once `make gemma` ran).
    assert {MODEL_ID, "gemma3-270m"} <= set(models)
    assert models[MODEL_ID].in_store and models[MODEL_ID].description
    assert "make gemma" in models["gemma3-270m"].description


def test_unknown_model_load_is_not_found(server) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(_control(server).LoadModel(model_control_pb2.LoadModelRequest(model="nope")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_server_exits_when_parent_dies(start_server) -> None:
    parent = subprocess.Popen(["sleep", "600"])
    try:
        server = start_server("--parent-pid", str(parent.pid))
    finally:
        parent.kill()
        parent.wait()
    assert server.proc.wait(timeout=60) == 0


def test_sigterm_stops_gracefully(start_server) -> None:
    server = start_server()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0


@pytest.mark.parametrize(
    "listen",
    ["0.0.0.0:5000", "192.168.1.10:5000", "[::]:5000", "example.com:5000", ":5000", "nonsense"],
)
def test_non_loopback_listen_is_refused(listen: str) -> None:
    # Refused before anything loads: exit 2 with one clear line, and no server.
    proc = subprocess.run(
        [sys.executable, "-m", "edgellm.server", "--listen", listen],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--listen" in proc.stderr and listen in proc.stderr


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:5000", "127.0.0.2:1", "[::1]:5000", "localhost:5000", "unix:/x.sock"]
)
def test_loopback_listen_is_accepted(listen: str) -> None:
    check_listen(listen)


def test_unix_socket_is_private(start_server) -> None:
    server = start_server()
    socket = Path(server.address.removeprefix("unix:"))
    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
