"""The prefix cache over IPFS for the vllm engine: the same blocks, keys and checks as the
torch engine's (`edgellm.kv.prefix.PrefixCache`), with vLLM's paged cache behind a file.

For one request (`PrefixRun`):

1. Before vLLM sees it: look the prompt up (this peer's blocks and the request's
   manifest: a P/D handoff or a swarm holder), fetch and verify the blocks into a host
   buffer (`HostCache`, a `StageCache`) and write the part vLLM will take to a file
   (`kvfile`); the connector (`connector.py`) copies it into the request's pages.
2. vLLM computes the rest of the prompt; the connector writes the prompt's full blocks'
   K/V to a second file before the first token comes out.
3. With the first token in hand, before it is streamed: the spot check, then the store of
   the prompt's new blocks in the background (as the torch engine's), awaited before the
   request's last chunk. Fetched blocks are adopted only if the request ends harmlessly.

Decisions:

- **The spot check holds back instead of folding in.** The torch engine recomputes one
  random imported position as an extra row of the prefill (kv/spot.py); vLLM computes a
  contiguous suffix of the prompt and no extra rows. So vLLM takes the cached prefix only
  up to the vLLM block holding the random position p, computes from there, and p's
  recomputed K/V (in the saved file) are compared with the fetched ones. A mismatch
  discards the first token, drops the holders and runs the request again without the
  cache. The price: on average half the hit is recomputed. Requests that take cached
  blocks run under a fresh `cache_salt`, so vLLM's own prefix cache never hands blocks
  that were not checked yet to another request.
- **vLLM's block, not ours, is the unit of a load** (vLLM's CPU kernels want multiples of
  32 tokens; the engine sets vLLM's block to the least multiple of both).
- Anything wrong with Kubo, a block or a file costs a warning and a recompute.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoConfig

from edgellm.engine.types import PreparedRequest
from edgellm.engine.vllm import kvfile
from edgellm.kv.prefix import PrefixCache, PrefixHit, SpotCheck, StoreJob
from edgellm.kv.stage import KVLayout

log = logging.getLogger(__name__)

# vLLM's CPU attention kernels want blocks of a multiple of 32 tokens.
VLLM_BLOCK_MULTIPLE = 32


def layout_of(model_dir: Path) -> tuple[KVLayout, str]:
    """The model's K/V layout (fp32, as the engine runs it) and why its KV cannot go
    through the connector ("" when it can): vLLM keeps sliding-window layers in cache
    groups of their own, which the connector does not map."""
    config = AutoConfig.from_pretrained(model_dir)
    layout = KVLayout.of_config(config, 0, config.num_hidden_layers, torch.float32)
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        return layout, f"its layers are {', '.join(sorted(kinds))}; only full attention is mapped"
    return layout, ""


def shape_of(layout: KVLayout) -> kvfile.Shape:
    """The K/V of a file holding `layout`'s layers."""
    return kvfile.Shape(layout.layers, layout.kv_heads, layout.head_dim, layout.dtype)


def vllm_block_size(block_size: int) -> int:
    """The least multiple of both our block size and VLLM_BLOCK_MULTIPLE."""
    size = VLLM_BLOCK_MULTIPLE
    while size % block_size:
        size += VLLM_BLOCK_MULTIPLE
    return size


class HostCache:
    """A StageCache over one contiguous host tensor [2 * layers, kv_heads, n, head_dim]."""

    def __init__(self, layout: KVLayout, data: torch.Tensor, position: int = 0) -> None:
        self.kv_layout = layout
        self.data = data
        self.position = position

    @classmethod
    def empty(cls, layout: KVLayout, capacity: int) -> HostCache:
        return cls(layout, torch.empty(shape_of(layout).of(capacity), dtype=layout.dtype))

    def export_kv(self, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers = self.kv_layout.layers
        return [
            (
                self.data[2 * i, :, start:end].contiguous(),
                self.data[2 * i + 1, :, start:end].contiguous(),
            )
            for i in range(layers)
        ]

    def reserve_kv(self, n: int) -> torch.Tensor:
        return self.data[:, :, self.position : self.position + n]

    def commit_kv(self, n: int) -> None:
        self.position += n


@dataclass(frozen=True)
class VllmKV:
    """What the engine's requests share besides the prefix cache: the model's K/V shape,
    vLLM's block size and the directory of the files."""

    layout: KVLayout
    vllm_block: int
    dir: Path

    @property
    def shape(self) -> kvfile.Shape:
        return shape_of(self.layout)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class SpotCheckFailed(Exception):
    """The recomputed position differed from the cached blocks; run again without them."""


class PrefixRun:
    """One request's trip through the prefix cache (see the module's docstring)."""

    def __init__(self, cache: PrefixCache, kv: VllmKV, job: PreparedRequest) -> None:
        self.cache = cache
        self.kv = kv
        self.job = job
        name = uuid.uuid4().hex
        self._load_path = kv.dir / f"{name}.load"
        self._save_path = kv.dir / f"{name}.save"
        self.hit = PrefixHit()
        self.tokens = 0  # prompt tokens vLLM takes from the cache
        self._staged: HostCache | None = None
        self._check: SpotCheck | None = None
        self.store: StoreJob | None = None
        self._finished = False

    def params(self) -> tuple[dict, str | None]:
        """The request's kv_transfer_params and cache salt (None: vLLM's prefix cache may
        share its blocks). Looks the prompt up and writes the load file."""
        ids = self.job.prompt_ids
        block = self.cache.block_size
        saved = len(ids) // block * block
        ours: dict = {
            "save": str(self._save_path) if saved else "",
            "save_tokens": saved,
            "layers": self.kv.layout.layer_end,
            "kv_heads": self.kv.layout.kv_heads,
            "head_dim": self.kv.layout.head_dim,
        }
        self._lookup()
        salt = None
        if self.tokens:
            try:
                kvfile.write(self._load_path, self._staged.data[:, :, : self.tokens])
            except OSError as exc:  # e.g. /dev/shm full: compute the prompt
                log.warning("kv: cannot hand the cached blocks to vLLM, computing: %s", exc)
                self.tokens = 0
        if self.tokens:
            ours |= {"load": str(self._load_path), "load_tokens": self.tokens}
            salt = uuid.uuid4().hex
        return {"kv_transfer_params": {kvfile.PARAM: ours}}, salt

    def _lookup(self) -> None:
        if self.job.no_prefix_cache:
            return
        limit = (len(self.job.prompt_ids) - 1) // self.cache.block_size
        staged = HostCache.empty(self.kv.layout, limit * self.cache.block_size)
        try:
            hit = self.cache.load([staged], self.job.prompt_ids, self.job.kv_manifest)
        except Exception as exc:  # noqa: BLE001 - a peer's manifest or blocks must not fail us
            log.warning("kv: prefix cache lookup failed, computing the whole prompt: %r", exc)
            return
        self.hit, self._staged, self._check = hit, staged, hit.spot
        usable = hit.tokens if hit.spot is None else hit.spot.position
        self.tokens = usable // self.kv.vllm_block * self.kv.vllm_block

    def prefilled(self) -> None:
        """After the first token: the spot check (raises SpotCheckFailed), then start
        storing the prompt's new blocks."""
        computed = self._read_saved()
        check = self._check
        if computed is None and check is not None and self.tokens:
            # Nothing to check the loaded blocks against (the load failed and vLLM
            # recomputed, or the save did): do not stream from them unchecked.
            self.tokens = 0
            raise SpotCheckFailed("the cached blocks could not be checked")
        if computed is not None and check is not None and check.position < computed.position:
            difference = _difference(computed.data, self._staged.data, check.position)
            judged = self.cache.judge(self.hit, check, difference, self.kv.layout.dtype)
            if judged is not self.hit:
                self.hit, used = judged, self.tokens
                self.tokens = 0
                if used:
                    raise SpotCheckFailed(f"cached position {check.position} differs")
        self._staged = None
        if computed is not None:
            self.store = self._store(computed)

    def _read_saved(self) -> HostCache | None:
        tokens = len(self.job.prompt_ids) // self.cache.block_size * self.cache.block_size
        if not tokens:
            return None
        try:
            data = kvfile.read(self._save_path, self.kv.shape.of(tokens), self.kv.layout.dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("kv: vLLM did not hand over the prompt's K/V (%s); not storing it", exc)
            return None
        return HostCache(self.kv.layout, data, tokens)

    def _store(self, computed: HostCache) -> StoreJob | None:
        # What vLLM took is the hit; blocks fetched past it were not used: not adopted.
        used = self.tokens // self.cache.block_size
        keys = self.hit.keys[:used]
        hit = replace(
            self.hit,
            tokens=self.tokens,
            remote=tuple(r for r in self.hit.remote if r[0].key in keys),
            used=tuple(u for u in self.hit.used if u[0] in keys),
            spot=None,
        )
        try:
            return self.cache.store_async([computed], self.job.prompt_ids, hit)
        except RuntimeError as exc:  # no memory or no thread: the request goes on
            log.warning("kv: cannot store the prompt's blocks: %r", exc)
            return None

    def finish(self, harmless: bool) -> float:
        """Say how the request ended; the store's time in ms (waits for it if harmless).
        Only the first call counts."""
        if self._finished:
            return 0.0
        self._finished = True
        for path in (self._load_path, self._save_path):
            path.unlink(missing_ok=True)
        if self.store is None:
            return 0.0
        self.store.finish(harmless)
        return self.store.wait() if harmless else 0.0


def _difference(computed: torch.Tensor, cached: torch.Tensor, position: int) -> float:
    """Largest difference of every layer's K/V at `position`, relative to the recomputed
    row's largest value (as the torch engine's spot check)."""
    row = computed[:, :, position]
    scale = row.abs().max().item() or 1.0
    return (row - cached[:, :, position]).abs().max().item() / scale
