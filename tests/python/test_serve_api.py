"""`edgellm serve` through the official `openai` client: a real node (backend, Kubo, the
embedded model), greedy answers equal to single-process transformers `generate`, and every
bad input answered with the OpenAI error it deserves, never a 5xx."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from edgellm.models.add import add_model
from edgellm.models.store import ModelStore
from tests.python.conftest import MODEL_ID, processes_mentioning
from tests.python.tiny_models import build, quiet

API_KEY = "sk-edgellm-test-key"
FUZZ_MODEL_ID = "tiny-llama"
MAX_NEW = 24
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": "Because of Rayleigh scattering."},
        {"role": "user", "content": "Say it again, differently."},
    ],
]
RAW = "The three primary colours are"


@pytest.fixture(scope="module")
def node(start_serve, tmp_path_factory: pytest.TempPathFactory):
    key_file = tmp_path_factory.mktemp("key") / "api.key"
    key_file.write_text(API_KEY + "\n")
    key_file.chmod(0o600)
    return start_serve("--api-key-file", str(key_file), "--max-queue", "2")


@pytest.fixture(scope="module")
def client(node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=API_KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def tokenizer(store_dir: Path):
    return AutoTokenizer.from_pretrained(store_dir)


@pytest.fixture(scope="module")
def reference(store_dir: Path, tokenizer):
    """Greedy transformers `generate` on the chat-templated (or raw) prompt: the token
    ids, the text they decode to, and the finish reason OpenAI would give."""
    model = AutoModelForCausalLM.from_pretrained(store_dir).eval()

    def run(ids: list[int], max_new: int = MAX_NEW) -> tuple[list[int], str, str]:
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(
                x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new
            )
        new = out[0, x.shape[1] :].tolist()
        stopped = new[-1] == tokenizer.eos_token_id
        text = tokenizer.decode(new, skip_special_tokens=True)
        return new, text, "stop" if stopped else "length"

    def chat(messages) -> tuple[list[int], str, str]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return run(tokenizer(text, add_special_tokens=False)["input_ids"])

    def raw(prompt: str) -> tuple[list[int], str, str]:
        return run(tokenizer(prompt)["input_ids"])

    return {"chat": [chat(m) for m in CHATS], "raw": raw(RAW)}


def _weights_cid(node) -> str:
    record = json.loads((node.data_dir / "run" / "serve.json").read_text())
    return next(m["weights_cid"] for m in record["models"] if m["id"] == MODEL_ID)


# -- the oracle ---------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(len(CHATS)))
def test_chat_equals_generate(client, node, reference, i):
    ids, text, finish = reference["chat"][i]
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=CHATS[i], max_tokens=MAX_NEW, temperature=0
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL_ID
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == finish
    assert reply.usage.completion_tokens == len(ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + len(ids)
    assert reply.usage.prompt_tokens_details.cached_tokens >= 0
    assert reply.system_fingerprint == _weights_cid(node)


@pytest.mark.parametrize("i", range(len(CHATS)))
def test_chat_stream_equals_generate(client, reference, i):
    ids, text, finish = reference["chat"][i]
    stream = client.chat.completions.create(
        model=MODEL_ID,
        messages=CHATS[i],
        max_completion_tokens=MAX_NEW,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == finish and not any(finishes[:-1])
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == len(ids)


def test_completions_equal_generate(client, reference):
    ids, text, finish = reference["raw"]
    reply = client.completions.create(model=MODEL_ID, prompt=RAW, max_tokens=MAX_NEW)
    assert reply.object == "text_completion"
    assert reply.choices[0].text == text and reply.choices[0].finish_reason == finish
    assert reply.usage.completion_tokens == len(ids)
    streamed = list(
        client.completions.create(model=MODEL_ID, prompt=RAW, max_tokens=MAX_NEW, stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text


def test_stop_string_and_seeded_sampling(client, reference):
    _, text, _ = reference["chat"][0]
    word = text.split()[1]  # a word the greedy answer produces after its first
    reply = client.chat.completions.create(
        model=MODEL_ID, messages=CHATS[0], max_tokens=MAX_NEW, stop=[word]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == text[: text.index(word)]
    sampled = [
        client.chat.completions.create(
            model=MODEL_ID, messages=CHATS[0], max_tokens=8, temperature=0.9, top_p=0.9, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]  # a seed makes sampling reproducible


def test_models(client, node):
    models = client.models.list().data
    assert MODEL_ID in [m.id for m in models]
    model = client.models.retrieve(MODEL_ID)
    assert model.id == MODEL_ID and model.object == "model"
    assert model.model_extra["weights_cid"] == _weights_cid(node)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# -- bad input ----------------------------------------------------------------------------

BAD_CHATS = [
    pytest.param({"messages": []}, "messages", id="empty-messages"),
    pytest.param({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", id="role"),
    pytest.param({"max_tokens": 0}, "max_tokens", id="max-tokens-0"),
    pytest.param({"max_tokens": -5}, "max_tokens", id="max-tokens-negative"),
    pytest.param({"max_tokens": 10_000_000}, "max_tokens", id="max-tokens-beyond-context"),
    pytest.param({"temperature": 2.5}, "temperature", id="temperature"),
    pytest.param({"top_p": 1.5}, "top_p", id="top-p"),
    pytest.param({"n": 2}, "n", id="n"),
    pytest.param({"messages": "hello"}, "messages", id="wrong-type"),
    pytest.param({"stop": ["a", "b", "c", "d", "e"]}, "stop", id="too-many-stops"),
]


@pytest.mark.parametrize(("fields", "param"), BAD_CHATS)
def test_bad_chat_requests_are_400(client, fields, param):
    body = {"model": MODEL_ID, "messages": CHATS[0], "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] in (param, None) or error["param"].startswith(param)


def test_prompt_beyond_context_is_400(client):
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model=MODEL_ID, prompt="word " * 20_000, max_tokens=4)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=CHATS[0], max_tokens=4)


def test_api_key(node):
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=f"{node.url}/v1", api_key=key or "x", max_retries=0)
        if not key:
            bad = openai.OpenAI(
                base_url=f"{node.url}/v1",
                api_key="x",
                max_retries=0,
                default_headers={"Authorization": ""},
            )
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    # Operations endpoints answer without a key.
    assert httpx.get(f"{node.url}/health").status_code == 200
    assert httpx.get(f"{node.url}/ready").status_code == 200


def test_malformed_and_oversized_bodies(node):
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    url = f"{node.url}/v1/chat/completions"
    reply = httpx.post(url, content=b'{"model": "x", "messages": [', headers=auth)
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request_error"
    huge = json.dumps(
        {"model": MODEL_ID, "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    )
    reply = httpx.post(url, content=huge.encode(), headers=auth, timeout=60)
    assert reply.status_code == 413 and reply.json()["error"]["message"]


def test_slow_headers_are_cut(node):
    """A client that never finishes its headers is disconnected by the read-header
    timeout instead of holding a connection forever."""
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=120) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        conn.settimeout(120)
        data = conn.recv(4096)  # the server closes (b"") or answers 408, never hangs
    assert data == b"" or data.startswith(b"HTTP/1.1 408")
    assert httpx.get(f"{node.url}/health").status_code == 200


def _metric(node, name: str, **labels: str) -> float:
    text = httpx.get(f"{node.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_disconnect_aborts_the_generation(node, client):
    """A client gone mid-stream stops its generation on the backend (serve's Abort, or the
    cancelled stream, whichever arrives first), and leaves no request behind: the node
    serves the next one."""
    backend_log = node.data_dir / "logs" / "backend.log"
    with httpx.stream(
        "POST",
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": MODEL_ID, "messages": CHATS[0], "max_tokens": 400, "stream": True},
        timeout=120,
    ) as reply:
        lines = reply.iter_lines()
        request_id = ""
        while not request_id:
            line = next(lines)
            if line.startswith("data: {"):
                request_id = json.loads(line[6:])["id"]
        next(lines)
    # serve sends Abort and its stream is cancelled at once: whichever reaches the
    # backend first stops the engine, and the backend logs it either way.
    stopped = (f"abort {request_id}", f"cancelled {request_id}")
    deadline = time.monotonic() + 60
    while not any(s in backend_log.read_text() for s in stopped) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(s in backend_log.read_text() for s in stopped), backend_log.read_text()[-2000:]
    while _metric(node, "edgellm_requests_running") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric(node, "edgellm_requests_running") == 0
    reply = client.chat.completions.create(model=MODEL_ID, messages=CHATS[0], max_tokens=2)
    assert reply.choices[0].message.content


def test_flood_gets_429_not_5xx(node, client):
    """Far more concurrent clients than the queue holds: the extra ones get RateLimitError
    (429 with Retry-After), none a 5xx, and the node serves the next request."""
    outcomes: list = []
    lock = threading.Lock()

    def one() -> None:
        try:
            reply = client.chat.completions.create(model=MODEL_ID, messages=CHATS[0], max_tokens=16)
            outcome = reply.choices[0].finish_reason
        except openai.APIStatusError as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limited = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    answered = [o for o in outcomes if o in ("stop", "length")]
    assert len(limited) + len(answered) == 12, outcomes
    assert limited and answered, outcomes
    assert all(e.response.headers["Retry-After"].isdigit() for e in limited)
    reply = client.chat.completions.create(model=MODEL_ID, messages=CHATS[0], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_metrics_count_requests(node):
    ok = _metric(node, "edgellm_http_requests_total", model=MODEL_ID, route="local", code="200")
    assert ok >= 1
    assert _metric(node, "edgellm_http_requests_total", code="429") >= 1
    assert _metric(node, "edgellm_completion_tokens_total", model=MODEL_ID) > 0
    assert _metric(node, "edgellm_time_to_first_token_seconds_count", model=MODEL_ID) >= 1
    assert _metric(node, "edgellm_queue_depth", model=MODEL_ID) == 0


# Schemathesis's --max-examples, per API operation: the run stops there. With --max-time
# its fuzzing phase draws new cases until the time is spent (schemathesis run's docs), which
# made this test 240 s of fuzzing whatever the count, and as many cases as the machine's
# load allowed (about 1,470 alone on two cores, 0.2 s a case against the embedded model).
# Bounded, against a small random model, it runs more cases in half the time.
FUZZ_EXAMPLES = 400
# The run's case count (seeded; 1,315 cases at 300 and 1,915 at 500 here): a floor, so that a
# Schemathesis that generates far fewer cases fails the test rather than passing it idle.
MIN_FUZZ_CASES = 1200


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory, store_dir: Path) -> Path:
    """A models directory holding one small random llama with the embedded model's
    tokenizer and context length (tests/python/tiny_models.py): the API's checks do not
    depend on what the model answers, and its answers cost a small part of the embedded
    model's."""
    root = tmp_path_factory.mktemp("fuzz-models")
    add_model(
        ModelStore(root / "models"),
        build("llama", root / "src", store_dir, max_positions=8192),
        FUZZ_MODEL_ID,
        quiet,
    )
    return root / "models"


def test_openapi_schemathesis(start_serve, tmp_path, fuzz_models: Path):
    """Schemathesis against /openapi.json, its cases bounded and seeded (the same ones every
    run): no 5xx, every response conforms to the document, invalid requests are refused.
    The node caps a request at 4 tokens (--max-completion-tokens, which its document
    states), so every generated request answers quickly; the document lists the served
    model as the only id."""
    key_file = tmp_path / "api.key"
    key_file.write_text(API_KEY)
    node = start_serve(
        "--api-key-file",
        str(key_file),
        "--max-completion-tokens",
        "4",
        "--model",
        FUZZ_MODEL_ID,
        env={"EDGELLM_MODELS_DIR": str(fuzz_models)},
    )
    spec = httpx.get(f"{node.url}/openapi.json").json()
    assert spec["components"]["schemas"]["ModelID"]["enum"] == [FUZZ_MODEL_ID]
    assert "/v1/chat/completions" in spec["paths"]
    exe = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [
            str(exe),
            "run",
            f"{node.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--max-examples",
            str(FUZZ_EXAMPLES),
            "--seed",
            "1",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,negative_data_rejection",
            "--generation-database",
            "none",
            "--request-timeout",
            "120",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    cases = re.search(r"(\d+) generated", run.stdout)
    assert cases and int(cases.group(1)) >= MIN_FUZZ_CASES, run.stdout[-3000:]


def test_sigterm_finishes_in_flight_and_leaves_nothing(start_serve, reference):
    """SIGTERM: stop accepting, finish the request in flight, stop everything."""
    node = start_serve()
    c = openai.OpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0)
    stream = c.chat.completions.create(
        model=MODEL_ID, messages=CHATS[0], max_tokens=MAX_NEW, stream=True
    )
    first = next(iter(stream))  # the request is in flight
    node.proc.send_signal(signal.SIGTERM)
    rest = list(stream)
    content = "".join(ch.choices[0].delta.content or "" for ch in [first, *rest] if ch.choices)
    assert content == reference["chat"][0][1]
    assert node.proc.wait(timeout=120) == 0
    deadline = time.monotonic() + 30
    while processes_mentioning(str(node.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_mentioning(str(node.data_dir))
