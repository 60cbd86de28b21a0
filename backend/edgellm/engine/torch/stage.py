"""A pipeline stage: layers [start, end) of a decoder-only transformers model.

The first stage embeds token ids; later stages take hidden states; the last applies the
final norm and the LM head. A stage reads only its own tensors from the store's
safetensors file (mmap), into a model built from a copy of the config with
`num_hidden_layers = end - start`. Each request gets its own `StageSession` (KV cache and
position), so activations in, activations out: a session never assumes the next stage is
local, and a later issue can put stages on different peers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.initialization import no_init_weights

from edgellm.engine.layers import LayerRange
from edgellm.engine.runner import Slots
from edgellm.engine.torch import dense
from edgellm.engine.torch.batch import BATCH_KWARG, SLOTS_ATTENTION, BatchCache
from edgellm.engine.torch.kv_cache import PreallocatedCache
from edgellm.engine.torch.slots import (
    UNCONFIGURED_BATCH,
    UNCONFIGURED_KV_MB,
    SlotPool,
    slots_for,
)
from edgellm.errors import InvalidRequest, StoreError
from edgellm.kv import spot
from edgellm.kv.stage import KVLayout
from edgellm.models.manifest import WEIGHTS_NAME

_LAYER_PREFIX = "layers."


def _stage_name(name: str, prefix: str, layers: LayerRange) -> str | None:
    """Map a stored tensor name to this stage's module name, or None if not ours."""
    if not name.startswith(prefix):
        return None
    inner = name[len(prefix) :]
    if inner.startswith(_LAYER_PREFIX):
        index_text, _, rest = inner[len(_LAYER_PREFIX) :].partition(".")
        index = int(index_text)
        if not layers.start <= index < layers.end:
            return None
        return f"{_LAYER_PREFIX}{index - layers.start}.{rest}"
    return inner


def _stage_config(full, layers: LayerRange):
    """The config of a model holding only `layers`: per-layer lists (`layer_types`, which
    tells Gemma 3's sliding-window layers from its global ones, Qwen2's windowed layers
    from full ones) are sliced, so local layer i keeps the kind of global layer start + i
    and the cache and masks follow it."""
    config = copy.deepcopy(full)
    config.num_hidden_layers = layers.end - layers.start
    kinds = getattr(full, "layer_types", None)
    if isinstance(kinds, list) and len(kinds) == full.num_hidden_layers:
        config.layer_types = kinds[layers.start : layers.end]
    return config


class Stage:
    """Weights of one layer range, shared by every session that runs through it, and the
    slot pool those sessions' KV caches live in."""

    def __init__(
        self,
        model_dir: Path,
        layers: LayerRange | None = None,
        device: str = "cpu",
        slots: Slots | None = None,
    ):
        full = AutoConfig.from_pretrained(model_dir)
        self.num_layers_total: int = full.num_hidden_layers
        self.layers = layers or LayerRange(0, self.num_layers_total)
        self.layers.validate(self.num_layers_total)
        self.is_first = self.layers.start == 0
        self.is_last = self.layers.end == self.num_layers_total
        self.device = torch.device(device)
        self.config = _stage_config(full, self.layers)
        with no_init_weights():
            # SDPA, plus batched decode steps over the slot pool (batch.py).
            self.model = AutoModel.from_config(self.config, attn_implementation=SLOTS_ATTENTION)
        self.lm_head: torch.Tensor | None = None
        self.softcap: float | None = getattr(self.config, "final_logit_softcapping", None)
        self._load_weights(Path(model_dir) / WEIGHTS_NAME)
        self.model.to(self.device).eval()
        self.dtype: torch.dtype = next(self.model.parameters()).dtype
        # Batched decode steps' dense layers through oneDNN (dense.py), where it runs.
        self.batch_dense = dense.supported(self.device, self.dtype)
        if self.batch_dense:
            dense.install(self.model)
        self.kv_layout = KVLayout.of_config(
            self.config, self.layers.start, self.layers.end, self.dtype
        )
        self.kv_heads: int = self.kv_layout.kv_heads
        self.head_dim: int = self.kv_layout.head_dim
        self.pool = SlotPool(
            slots or slots_for(full, UNCONFIGURED_BATCH, UNCONFIGURED_KV_MB),
            self.config.num_hidden_layers,
            self.kv_heads,
            self.head_dim,
            self.dtype,
            self.device,
        )

    def _load_weights(self, path: Path) -> None:
        prefix = self.model.base_model_prefix + "."
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = set(f.keys())
            for name in sorted(names):
                local = _stage_name(name, prefix, self.layers)
                if local is not None:
                    state[local] = f.get_tensor(name)
            head = self._head_weight(f, names, prefix) if self.is_last else None
        if not self.is_first:
            state.pop("embed_tokens.weight", None)
            self.model.embed_tokens = None
        if not self.is_last:
            state.pop("norm.weight", None)
            self.model.norm = nn.Identity()
        missing, unexpected = self.model.load_state_dict(state, strict=False, assign=True)
        if unexpected or [m for m in missing if not m.startswith("rotary_emb")]:
            raise StoreError(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
        self.lm_head = None if head is None else head.to(self.device)

    def _head_weight(self, f, names: set[str], prefix: str) -> torch.Tensor:
        if "lm_head.weight" in names:
            return f.get_tensor("lm_head.weight")
        if getattr(self.config, "tie_word_embeddings", False):
            return f.get_tensor(prefix + "embed_tokens.weight")
        raise StoreError("store has no lm_head.weight and the embeddings are not tied")

    def session(self, max_positions: int) -> StageSession:
        """A session in a free pool slot, or with a cache of its own when the request is
        longer than a slot or every slot is taken."""
        return StageSession(self, max_positions, self.pool.acquire(max_positions))


class StageSession:
    """One request's pass through a stage: its KV cache (in pool slot `slot`, or its own
    when None) and the next position. KV blocks (edgellm.kv) see it as a `StageCache`."""

    def __init__(self, stage: Stage, max_positions: int, slot: int | None = None) -> None:
        self.stage = stage
        self.slot = slot
        if slot is not None:
            max_positions = stage.pool.slots.positions
        self.cache = self._new_cache(max_positions)
        self.position = 0
        # Generate passes an all-ones 2D mask; views of one buffer avoid a tensor per token.
        self._mask = torch.ones(1, max_positions, dtype=torch.long, device=stage.device)
        self._positions = torch.arange(max_positions, device=stage.device).unsqueeze(0)

    def _new_cache(self, max_positions: int) -> PreallocatedCache:
        stage = self.stage
        buffer = None if self.slot is None else stage.pool.view(self.slot)
        return PreallocatedCache(
            stage.config,
            max_positions,
            stage.kv_heads,
            stage.head_dim,
            stage.dtype,
            stage.device,
            buffer,
        )

    def close(self) -> None:
        """Give the slot back to the pool (idempotent); the session is unusable after."""
        if self.slot is not None:
            self.stage.pool.release(self.slot)
            self.slot = None

    def advance(self, n: int) -> None:
        """n positions were written into the slot by a batched step (batch.py)."""
        self.cache.commit(n)
        self.position += n

    @property
    def kv_layout(self) -> KVLayout:
        return self.stage.kv_layout

    @property
    def device(self) -> torch.device:
        return self.stage.device

    def reset(self) -> None:
        """Empty the cache, as when the session was opened (after an import that failed
        half way, so the prompt can be computed from position 0)."""
        self.cache = self._new_cache(self._mask.shape[1])
        self.position = 0

    @torch.inference_mode()
    def forward(
        self, inputs: torch.Tensor, logits: bool = True, check: int | None = None
    ) -> torch.Tensor:
        """Token ids [1, n] (first stage) or hidden states [1, n, h] -> hidden states
        [1, n, h], or float32 logits [1, vocab] of the last position on the last stage
        (hidden states there too with logits=False). With `check`, the last row recomputes
        cached position `check` instead (the KV spot check, edgellm.kv.spot): it sees only
        [0, check), its K/V stay in the buffer row after the others, out of the cache, and
        the logits are the row before's."""
        stage = self.stage
        n = inputs.shape[1]
        end = self.position + n
        if check is None:
            mask = self._mask[:, :end]
            positions = self._positions[:, self.position : end]
        else:
            if self.cache.buffer is None or not 0 <= check < self.position:
                raise InvalidRequest(f"cannot spot-check position {check} of this session")
            mask, positions = spot.mask_and_positions(self.position, n - 1, check, stage.device)
        kwargs = {"input_ids": inputs} if stage.is_first else {"inputs_embeds": inputs}
        out = stage.model(
            **kwargs,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
        )
        self.position = end
        hidden = out.last_hidden_state
        if check is not None:
            self.position = end - 1
            self.cache.commit(-1)  # the check row stays in the buffer, out of the cache
        if not stage.is_last or not logits:
            return hidden
        last = hidden.shape[1] - (2 if check is not None else 1)
        logits = nn.functional.linear(hidden[:, last : last + 1, :], stage.lm_head)[:, -1]
        if stage.softcap:
            # Gemma 2/3 style: the *ForCausalLM head caps logits; the base model does not.
            return (torch.tanh(logits.float() / stage.softcap) * stage.softcap).clone()
        return logits.to(copy=True, dtype=torch.float32)

    @torch.inference_mode()
    def difference(self, position: int) -> float:
        """The largest difference between the K/V of cached `position` and of the buffer
        row just after the cache (where `forward(check=position)` left its recompute),
        relative to that row's largest value, over every layer's K and V at once."""
        buffer = self.cache.buffer
        if buffer is None or not 0 <= position < self.position < buffer.shape[-2]:
            raise InvalidRequest(f"no spot-check row for position {position}")
        cached = buffer[:, :, 0, :, position].float()  # [layers, 2, kv_heads, head_dim]
        recomputed = buffer[:, :, 0, :, self.position].float()
        worst = (cached - recomputed).abs().amax(dim=(2, 3))
        scale = recomputed.abs().amax(dim=(2, 3)) + 1e-6
        return float((worst / scale).max())

    def export_kv(self, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """K and V of positions [start, end) for each of this stage's layers, in layer
        order: contiguous CPU copies shaped [kv_heads, end - start, head_dim]."""
        if not 0 <= start < end <= self.position:
            raise InvalidRequest(
                f"positions [{start}, {end}) not in the cache [0, {self.position})"
            )
        out = []
        for layer in self.cache.layers:
            k = layer.keys[0, :, start:end, :]
            v = layer.values[0, :, start:end, :]
            out.append((_cpu_copy(k), _cpu_copy(v)))
        return out

    def import_kv(self, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append K and V of the next n positions (one pair per layer, each
        [kv_heads, n, head_dim]) as if they had been computed here; advances the position."""
        stage = self.stage
        if len(kv) != stage.config.num_hidden_layers:
            raise InvalidRequest(
                f"{len(kv)} layers of KV for a {stage.config.num_hidden_layers}-layer stage"
            )
        n = kv[0][0].shape[1]
        shape = (stage.kv_heads, n, stage.head_dim)
        for k, v in kv:
            if tuple(k.shape) != shape or tuple(v.shape) != shape or k.dtype != stage.dtype:
                raise InvalidRequest(
                    f"KV shaped {tuple(k.shape)} {k.dtype}, expected {shape} {stage.dtype}"
                )
        if self.position + n > self._mask.shape[1]:
            raise InvalidRequest("imported KV does not fit in this session")
        for index, (k, v) in enumerate(kv):
            self.cache.update(
                k.unsqueeze(0).to(stage.device), v.unsqueeze(0).to(stage.device), index
            )
        self.position += n

    def reserve_kv(self, n: int) -> torch.Tensor:
        """A writable view [2 * layers, kv_heads, n, head_dim] of the next n positions'
        K and V (row 2i is layer i's K, 2i+1 its V), for a caller that fills it in place
        (fetched blocks) and then calls `commit_kv(n)`; until then it is not cached."""
        if self.position + n > self._mask.shape[1]:
            raise InvalidRequest("imported KV does not fit in this session")
        try:
            return self.cache.reserve(n)
        except ValueError as exc:
            raise InvalidRequest(f"cannot import KV: {exc}") from exc

    def prefault(self, n: int) -> None:
        """Write zeros over the next n positions' K and V, not caching them: memory fresh
        from the allocator is mapped on first write, one page fault per 4 KB (about 6 us
        each on a virtual machine: 110 ms for a 1,568-token prompt's 72.7 MB), and a P/D
        decode peer does that while the prefill peer computes, not while it imports the
        prompt's blocks. A cache with no single buffer is left alone."""
        n = min(n, self._mask.shape[1] - self.position)
        if n <= 0:
            return
        try:
            self.cache.reserve(n).zero_()
        except ValueError:
            return

    def commit_kv(self, n: int) -> None:
        """Make the n positions written through `reserve_kv` part of the cache."""
        self.cache.commit(n)
        self.position += n


def _pooled(session: StageSession) -> bool:
    return session.slot is not None and session.cache.pooled


@torch.inference_mode()
def forward_batch(sessions: Sequence[StageSession], inputs: torch.Tensor) -> torch.Tensor:
    """One decode step of several sessions of one stage (engine/torch/batch.py): token
    ids [b, 1] (first stage) or hidden states [b, 1, h] -> hidden states [b, 1, h], or
    float32 logits [b, vocab] on the last stage. A lone session, or one outside the pool
    (a long request's own cache), takes its own exact path."""
    if len(sessions) == 1 or not all(_pooled(s) for s in sessions):
        return torch.cat([s.forward(inputs[i : i + 1]) for i, s in enumerate(sessions)])
    stage = sessions[0].stage
    device = stage.device
    positions = [s.position for s in sessions]
    slot_ids = [s.slot for s in sessions]
    positions_t = torch.tensor(positions, device=device)
    cache = BatchCache(stage.pool.buffer, torch.tensor(slot_ids, device=device), positions_t)
    kwargs = {"input_ids": inputs} if stage.is_first else {"inputs_embeds": inputs}
    with dense.batched(stage.batch_dense):
        out = stage.model(
            **kwargs,
            # A prepared 4D mask skips transformers' mask building; attention ignores it.
            attention_mask=torch.ones(len(sessions), 1, 1, 1, dtype=torch.bool, device=device),
            position_ids=positions_t.unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
            **{BATCH_KWARG: [(s, p + 1) for s, p in zip(slot_ids, positions, strict=True)]},
        )
        hidden = out.last_hidden_state
        logits = dense.head_logits(hidden[:, -1:, :], stage.lm_head) if stage.is_last else None
    for session in sessions:
        session.advance(1)
    if logits is None:
        return hidden
    return logits[:, -1].to(copy=True, dtype=torch.float32)


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    if t.device.type == "cpu":
        return t.clone(memory_format=torch.contiguous_format)
    return t.to("cpu").contiguous()
