"""EdgeLLMConnector: vLLM's KV connector (v1 API) for our prefix cache and P/D handoffs.

vLLM loads this module by path (`kv_transfer_config.kv_connector_module_path`) in its
engine core (the scheduler side) and in its worker (the side that owns the paged KV
cache); on CPU they are two processes. The connector moves K/V only between vLLM's pages
and files (`kvfile`); everything about IPFS, block keys, manifests and checks stays in the
backend (`edgellm.engine.vllm.prefix`), which names the files in each request's
`kv_transfer_params["edgellm"]`:

    load         a file of the prompt's first `load_tokens` positions (fetched blocks)
    load_tokens  how many; a multiple of vLLM's block size, fewer than the prompt's
    save         a file to write the prompt's first `save_tokens` positions to, once the
                 prompt has been computed (the backend stores them as IPFS blocks)
    save_tokens  how many
    layers, kv_heads, head_dim   the files' shape (kvfile.Shape)

Scheduler side: `get_num_new_matched_tokens` offers the `load` tokens beyond what vLLM's
own prefix cache already has; `build_connector_meta` tells the worker, per step, which
pages to fill from which file, and which pages to write out when a prompt's last chunk
has been scheduled. Worker side: `start_load_kv` copies files into pages before the
forward; `wait_for_save` copies pages into files after it, before the step's output
leaves the worker, so the backend finds the file once it sees the first token.

vLLM's CPU cache is one tensor per layer, [blocks, kv_heads, block_size, 2 * head_dim],
read as [blocks, kv_heads, 2 * block_size, head_dim]: a block's K, then its V
(`CPUAttentionBackendImpl.forward`). Its kernels (the "vec" kind, x86 in float32) keep
each head's K transposed, [head_dim, block_size], and V as is, [block_size, head_dim];
found by comparing pages with the torch engine's K/V, and checked by the tests, which
compare answers with transformers `generate`. Other kernels (AMX, NEON, ...) may lay K
out otherwise: the backend does not turn the connector on for them (`unsupported_layout`,
asked again by the worker of the pages it gets), with a warning. A model with other cache
groups (sliding windows) is not offered to this connector (`prefix.supported`).

A file that cannot be read costs its pages a recompute (`get_block_ids_with_load_errors`,
with vLLM's `kv_load_failure_policy: recompute`), never the request; that step writes no
save file for it, so the backend computes the prompt again rather than check pages that
were not loaded (prefix.PrefixRun.prefilled).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.v1.request import RequestStatus

from edgellm.engine.vllm import kvfile

log = logging.getLogger(__name__)

_LAYER = re.compile(r"layers\.(\d+)\.")


@dataclass(frozen=True)
class Transfer:
    """Positions [start, end) of one request between a file and its pages."""

    request_id: str
    path: str
    start: int
    end: int
    block_ids: tuple[int, ...]
    shape: kvfile.Shape


@dataclass
class StepMetadata(KVConnectorMetadata):
    loads: list[Transfer] = field(default_factory=list)
    saves: list[Transfer] = field(default_factory=list)


@dataclass
class _Tracked:
    """What the scheduler side keeps of one request until it finishes."""

    request_id: str
    params: dict[str, Any]
    prompt_len: int
    local: int = 0  # tokens vLLM's own prefix cache had
    load: bool = False  # its load is allocated and goes in the next step
    saved: bool = False
    block_ids: list[int] = field(default_factory=list)


def _params(request) -> dict[str, Any]:
    params = getattr(request, "kv_transfer_params", None) or {}
    ours = params.get(kvfile.PARAM)
    return ours if isinstance(ours, dict) else {}


def _shape(params: dict[str, Any]) -> kvfile.Shape:
    return kvfile.Shape(
        int(params["layers"]), int(params["kv_heads"]), int(params["head_dim"]), torch.float32
    )


class EdgeLLMConnector(KVConnectorBase_V1):
    def __init__(self, vllm_config, role: KVConnectorRole, kv_cache_config=None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self._block = vllm_config.cache_config.block_size
        self._tracked: dict[str, _Tracked] = {}
        self._layers: list[torch.Tensor] = []  # worker: each layer's pages, in layer order
        self._load_errors: set[int] = set()
        self._failed_loads: set[str] = set()  # requests whose load failed this step
        self._refused = ""  # why the worker's pages cannot be read or written

    # ---- scheduler side -------------------------------------------------------------

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int, bool]:
        params = _params(request)
        if not params:
            return 0, False
        tracked = self._tracked.get(request.request_id)
        if tracked is None:
            tracked = _Tracked(request.request_id, params, len(request.prompt_token_ids or ()))
            self._tracked[request.request_id] = tracked
        tracked.local = num_computed_tokens
        tokens = int(params.get("load_tokens", 0)) if params.get("load") else 0
        if tokens % self._block or tokens >= tracked.prompt_len:
            log.warning("edgellm connector: ignoring a load of %d tokens", tokens)
            return 0, False
        return max(0, tokens - num_computed_tokens), False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        tracked = self._tracked.get(request.request_id)
        if tracked is not None:
            tracked.load = num_external_tokens > 0

    def build_connector_meta(self, scheduler_output) -> StepMetadata:
        meta = StepMetadata()
        scheduled = scheduler_output.num_scheduled_tokens
        for new in scheduler_output.scheduled_new_reqs:
            tracked = self._tracked.get(new.req_id)
            if tracked is None:
                continue
            tracked.block_ids = list(new.block_ids[0])
            self._maybe_load(meta, tracked)
            self._maybe_save(meta, tracked, new.num_computed_tokens + scheduled[new.req_id])
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            tracked = self._tracked.get(req_id)
            if tracked is None:
                continue
            added = cached.new_block_ids[i]
            if req_id in cached.resumed_req_ids:  # preempted and back: all its blocks anew
                tracked.block_ids = list(added[0]) if added else []
            elif added:
                tracked.block_ids.extend(added[0])
            # A resumed request was offered its load again (preemption reset what it had
            # computed), and its new pages need it.
            self._maybe_load(meta, tracked)
            self._maybe_save(meta, tracked, cached.num_computed_tokens[i] + scheduled[req_id])
        return meta

    def _maybe_load(self, meta: StepMetadata, tracked: _Tracked) -> None:
        if tracked.load:
            tracked.load = False
            meta.loads.append(self._transfer(tracked, "load", tracked.local))

    def _maybe_save(self, meta: StepMetadata, tracked: _Tracked, computed: int) -> None:
        """Save once the step that computes the prompt's last token is scheduled."""
        if tracked.saved or not tracked.params.get("save") or computed < tracked.prompt_len:
            return
        tracked.saved = True
        meta.saves.append(self._transfer(tracked, "save", 0))

    def _transfer(self, tracked: _Tracked, kind: str, start: int) -> Transfer:
        params = tracked.params
        end = int(params[f"{kind}_tokens"])
        blocks = tuple(tracked.block_ids)
        return Transfer(tracked.request_id, str(params[kind]), start, end, blocks, _shape(params))

    def request_finished(self, request, block_ids: list[int]) -> tuple[bool, None]:
        tracked = self._tracked.pop(request.request_id, None)
        if tracked is not None and request.status == RequestStatus.FINISHED_ABORTED:
            # An aborted request's backend has stopped waiting for its files, and no later
            # step writes them (the engine core runs steps and aborts in turn).
            for kind in ("load", "save"):
                if tracked.params.get(kind):
                    Path(str(tracked.params[kind])).unlink(missing_ok=True)
        return False, None

    # ---- worker side ----------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        def index(name: str) -> int:
            found = _LAYER.search(name)
            if found is None:
                raise ValueError(f"edgellm connector: no layer index in {name!r}")
            return int(found.group(1))

        ordered = sorted(kv_caches.items(), key=lambda item: index(item[0]))
        for name, pages in ordered:
            if pages.dim() != 4 or pages.shape[2] != self._block or pages.shape[3] % 2:
                raise ValueError(
                    f"edgellm connector: {name} is {tuple(pages.shape)}; expected "
                    f"[blocks, kv_heads, {self._block}, 2 * head_dim] (vLLM's CPU cache)"
                )
        self._layers = [
            pages.view(pages.shape[0], pages.shape[1], 2 * self._block, -1) for _, pages in ordered
        ]
        first = ordered[0][1] if ordered else None
        self._refused = (
            unsupported_layout(first.dtype, self._block, first.shape[3] // 2)
            if first is not None
            else "no KV cache"
        )
        if self._refused:
            log.warning("edgellm connector: off, KV blocks are computed here: %s", self._refused)

    def start_load_kv(self, forward_context, **kwargs: Any) -> None:
        meta = self._get_connector_metadata()
        self._failed_loads = set()
        for load in meta.loads:
            try:
                if self._refused:
                    raise ValueError(self._refused)
                data = kvfile.read(Path(load.path), load.shape.of(load.end), load.shape.dtype)
                self._copy(load, data, into_pages=True)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("edgellm connector: cannot load %s, recomputing: %s", load.path, exc)
                self._failed_loads.add(load.request_id)
                first = load.start // self._block
                last = -(-load.end // self._block)
                self._load_errors.update(load.block_ids[first:last])

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs: Any) -> None:
        return None  # every layer is written out at once, after the forward

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        for save in [] if self._refused else meta.saves:
            if save.request_id in self._failed_loads:
                # Its pages were not filled this step (vLLM recomputes them next): no file,
                # and the backend computes the prompt again rather than trust a check.
                continue
            data = torch.empty(save.shape.of(save.end), dtype=save.shape.dtype)
            try:
                self._copy(save, data, into_pages=False)
                kvfile.write(Path(save.path), data)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("edgellm connector: cannot save %s: %s", save.path, exc)

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._load_errors = self._load_errors, set()
        return failed

    def _copy(self, transfer: Transfer, data: torch.Tensor, into_pages: bool) -> None:
        """Positions [start, end) between `data` ([2L, kv_heads, end, head_dim]) and the
        request's pages, one vLLM block at a time."""
        if data.shape[0] != 2 * len(self._layers):
            raise ValueError(f"{data.shape[0] // 2} layers in the file, {len(self._layers)} here")
        size = self._block
        for b in range(transfer.start // size, -(-transfer.end // size)):
            lo, hi = max(b * size, transfer.start), min((b + 1) * size, transfer.end)
            page, off, n = transfer.block_ids[b], lo - b * size, hi - lo
            for i, pages in enumerate(self._layers):
                # K is stored transposed, [head_dim, block]; V as is, [block, head_dim].
                k = pages[page, :, :size].view(-1, pages.shape[3], size)[:, :, off : off + n]
                v = pages[page, :, size + off : size + off + n]
                if into_pages:
                    k.copy_(data[2 * i, :, lo:hi].transpose(1, 2))
                    v.copy_(data[2 * i + 1, :, lo:hi])
                else:
                    data[2 * i, :, lo:hi].copy_(k.transpose(1, 2))
                    data[2 * i + 1, :, lo:hi].copy_(v)


def unsupported_layout(dtype: torch.dtype, block: int, head_dim: int) -> str:
    """Why vLLM's pages of this dtype, block and head size on this machine are not laid out
    as `_copy` knows, or "" when they are. The backend asks before it turns the connector
    on; the worker asks again of the pages it gets."""
    from vllm.v1.attention.backends import cpu_attn

    if dtype != torch.float32:
        return f"its KV cache is {dtype}; the connector knows float32 pages"
    kind = cpu_attn._get_attn_isa(dtype, block, head_dim)
    if kind != "vec":
        return f"vLLM's attention kernel here is {kind!r}; the connector knows 'vec' pages"
    return ""
