"""The backend server with --ipfs-api: the prefix cache through gRPC, as the Go node uses it."""

from __future__ import annotations

from edgellm.v1 import inference_pb2, inference_pb2_grpc

from .conftest import MODEL_ID

SHARED = " ".join(
    f"Line {i}: the orchard has apple, pear and plum trees in rows." for i in range(25)
)


def _generate(server, text: str, **fields) -> tuple[list[int], inference_pb2.GenerateResponse]:
    request = inference_pb2.GenerateRequest(
        model=MODEL_ID,
        raw_prompt=text,
        sampling=inference_pb2.SamplingParams(max_tokens=6),
        **fields,
    )
    replies = list(inference_pb2_grpc.InferenceStub(server.channel).Generate(request, timeout=300))
    return [t for r in replies for t in r.token_ids], replies[-1]


def test_prefix_cache_through_grpc(start_kubo, start_server, tmp_path) -> None:
    daemon = start_kubo()
    server = start_server("--ipfs-api", daemon.api, "--device", "cpu")
    _, first = _generate(server, SHARED + " Which trees?")
    assert first.usage.cached_prompt_tokens == 0
    assert first.timings.kv_store_ms > 0

    full_tokens, full = _generate(server, SHARED + " How many rows?", no_prefix_cache=True)
    assert full.usage.cached_prompt_tokens == 0 and full.timings.kv_fetch_ms == 0

    tokens, cached = _generate(server, SHARED + " How many rows?")
    assert cached.usage.cached_prompt_tokens >= 16 * 10
    assert cached.usage.cached_prompt_tokens % 16 == 0
    assert cached.timings.kv_fetch_ms > 0
    assert tokens == full_tokens
    assert list((tmp_path / "data" / "kv").glob("*/index.json"))

    # A manifest that is not one is ignored with a warning; this peer's blocks still serve.
    _, last = _generate(server, SHARED + " Which fruit?", kv_manifest=b"\x00garbage")
    assert last.usage.cached_prompt_tokens >= 16 * 10
    assert "ignoring the request's manifest" in server.log.read_text()
