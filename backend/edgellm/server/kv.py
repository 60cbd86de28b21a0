"""The KVControl service, KV blocks in the swarm: PrefixKeys, HeldKeys, BlockManifest.

The Go node uses them to announce the block keys this backend holds (HeldKeys, in the
DHT), to serve manifests of them to other peers (BlockManifest, over /edgellm/kv/1.0.0),
and, as a requester, to learn a prompt's keys before looking them up (PrefixKeys).

Keys are the chained keys of edgellm.kv.keys; the blocks and their index are the prefix
cache's (edgellm.kv.prefix, edgellm.kv.store) of each loaded model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import grpc

from edgellm.errors import EdgeLLMError, InvalidRequest
from edgellm.kv.keys import ChainSpec, chain
from edgellm.kv.manifest import BlockRef, KVManifest
from edgellm.kv.store import KVStore
from edgellm.server import messages
from edgellm.server.models import LoadedModel, ModelManager
from edgellm.server.status import abort
from edgellm.v1 import inference_pb2, kv_control_pb2, kv_control_pb2_grpc

if TYPE_CHECKING:
    from edgellm.kv.prefix import PrefixCache

MAX_KEYS = 4096  # keys in one request or reply (p2p.MaxKVKeys)
KEY_BYTES = 32
MAX_MANIFEST_BYTES = 1 << 20  # as GenerateRequest.kv_manifest and the p2p reply
MAX_CID_LEN = 256
MAX_PROVIDERS = 16
MAX_PROVIDER_LEN = 1024


class HeldKeyLog:
    """Sequence numbers for held keys, so the node can announce new ones incrementally.

    A key gets the next seq when first seen held; a key no longer held is dropped (and
    gets a fresh seq if it comes back). Seqs start afresh when the backend restarts; the
    node re-announces everything from seq 0 periodically anyway (provider records expire).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq: dict[bytes, int] = {}  # insertion order is seq order
        self._last = 0

    def sync(self, held: Iterable[bytes]) -> None:
        with self._lock:
            live = set()
            for key in held:
                live.add(key)
                if key not in self._seq:
                    self._last += 1
                    self._seq[key] = self._last
            for key in [k for k in self._seq if k not in live]:
                del self._seq[key]

    def after(self, after_seq: int, limit: int) -> tuple[list[bytes], int, bool]:
        """Keys with seq > after_seq (at most limit), the last one's seq, and whether more
        follow."""
        with self._lock:
            page = [(k, s) for k, s in self._seq.items() if s > after_seq]
        keys = [k for k, _ in page[:limit]]
        next_seq = page[limit - 1][1] if len(page) >= limit else (page[-1][1] if page else 0)
        return keys, max(next_seq, after_seq), len(page) > limit


def check_keys(keys: Sequence[bytes]) -> list[bytes]:
    if len(keys) > MAX_KEYS:
        raise InvalidRequest(f"at most {MAX_KEYS} keys, got {len(keys)}")
    for i, key in enumerate(keys):
        if len(key) != KEY_BYTES:
            raise InvalidRequest(f"keys[{i}] is {len(key)} bytes, a block key is {KEY_BYTES}")
    return [bytes(k) for k in keys]


def manifest_of(
    store: KVStore,
    spec: ChainSpec,
    keys: Sequence[bytes],
    providers: Sequence[str] = (),
    max_bytes: int = MAX_MANIFEST_BYTES,
) -> tuple[bytes, int]:
    """The manifest of the leading `keys` the store holds (any layer ranges), cut to fit in
    max_bytes, and how many blocks it names; (b"", 0) when the first key is not held."""
    blocks: list[BlockRef] = []
    for index, key in enumerate(keys):
        parts = store.parts(key)
        if not parts:
            break
        blocks.append(BlockRef(key, index * spec.block_size, tuple(parts)))
    while blocks:
        doc = KVManifest(
            spec.model_cid, spec.dtype, spec.block_size, tuple(blocks), tuple(providers)
        ).to_json()
        if len(doc) <= max_bytes:
            return doc, len(blocks)
        keep = max(0, min(len(blocks) - 1, len(blocks) * max_bytes // len(doc)))
        blocks = blocks[:keep]
    return b"", 0


class KVControl(kv_control_pb2_grpc.KVControlServicer):
    def __init__(self, models: ModelManager) -> None:
        self._models = models
        self._held = HeldKeyLog()

    def _caches(self) -> list[tuple[LoadedModel, PrefixCache]]:
        """Loaded models with a prefix cache, and the cache."""
        out = []
        for model in self._models.loaded():
            cache = model.engine.prefix_cache
            if cache is not None:
                out.append((model, cache))
        return out

    def _prompt_keys(self, request) -> kv_control_pb2.PrefixKeysResponse:
        which = request.WhichOneof("input")
        if which is None:
            raise InvalidRequest("exactly one of prompt, messages or raw_prompt must be set")
        generate = inference_pb2.GenerateRequest(model=request.model)
        if which == "messages":
            generate.messages.CopyFrom(request.messages)
        else:
            setattr(generate, which, getattr(request, which))
        req = messages.generation_request(generate, 0.0)
        store = self._models.store
        store.known(request.model)  # NOT_FOUND for an unknown id
        manifest = store.ensure(request.model)  # converts on first use, as Generate does
        token_ids = self._models.encoder(request.model).encode(req)
        loaded = self._models.get(request.model)
        cache = loaded.engine.prefix_cache if loaded is not None else None
        block_size = cache.block_size if cache is not None else self._models.kv_config.block_size
        spec = ChainSpec(manifest.weights_cid, manifest.dtype, block_size)
        keys = chain(spec, token_ids)[:MAX_KEYS]
        return kv_control_pb2.PrefixKeysResponse(
            keys=keys,
            weights_cid=manifest.weights_cid,
            block_size=block_size,
            prompt_tokens=len(token_ids),
        )

    def PrefixKeys(self, request, context: grpc.ServicerContext):
        try:
            return self._prompt_keys(request)
        except EdgeLLMError as exc:
            abort(context, exc)

    def HeldKeys(self, request, context: grpc.ServicerContext):
        limit = request.limit if 0 < request.limit <= MAX_KEYS else MAX_KEYS
        held: list[bytes] = []
        for _, cache in self._caches():
            held.extend(cache.store.keys())  # oldest first
        self._held.sync(held)
        keys, next_seq, more = self._held.after(request.after_seq, limit)
        return kv_control_pb2.HeldKeysResponse(keys=keys, next_seq=next_seq, more=more)

    def _manifest(self, request) -> kv_control_pb2.BlockManifestResponse:
        keys = check_keys(request.keys)
        if len(request.weights_cid) > MAX_CID_LEN:
            raise InvalidRequest(f"weights_cid is longer than {MAX_CID_LEN} characters")
        providers = list(request.providers)
        if len(providers) > MAX_PROVIDERS or any(
            not p or len(p) > MAX_PROVIDER_LEN for p in providers
        ):
            raise InvalidRequest(
                f"at most {MAX_PROVIDERS} providers of 1 to {MAX_PROVIDER_LEN} characters"
            )
        if not keys:
            return kv_control_pb2.BlockManifestResponse()
        for model, cache in self._caches():
            if request.weights_cid and request.weights_cid != cache.model_cid:
                continue
            if not cache.store.parts(keys[0]):
                continue
            spec = ChainSpec(cache.model_cid, model.manifest.dtype, cache.block_size)
            doc, count = manifest_of(cache.store, spec, keys, providers)
            if count:
                return kv_control_pb2.BlockManifestResponse(manifest=doc, blocks=count)
        return kv_control_pb2.BlockManifestResponse()

    def BlockManifest(self, request, context: grpc.ServicerContext):
        try:
            return self._manifest(request)
        except EdgeLLMError as exc:
            abort(context, exc)
