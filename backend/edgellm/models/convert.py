"""Convert a GGUF file or a transformers directory into a store directory (one
safetensors file + config + tokenizer).

transformers refuses `save_pretrained` on a GGUF-loaded model, so the state dict is
written with safetensors directly. Bytes must be identical on every machine (the
weights CID names them): tensors are sorted by name, contiguous, and the metadata fixed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgellm import warm
from edgellm.models.cid import file_cid
from edgellm.models.manifest import WEIGHTS_NAME, Manifest
from edgellm.models.registry import GgufSource, ModelSpec

# (phase, done, total); total 0 means unknown.
ProgressFn = Callable[[str, int, int], None]

PHASE_ASSEMBLE = "assembling GGUF"
PHASE_READ = "reading GGUF"
PHASE_WRITE = "writing safetensors"
PHASE_HASH = "hashing weights"
PHASE_LOAD = "loading"

_SAFETENSORS_METADATA = {"format": "pt"}


@contextmanager
def _gguf_progress(progress: ProgressFn) -> Iterator[None]:
    """Route transformers' GGUF de-quantization loop (a bare tqdm) to `progress`.

    transformers offers no callback there, and its tqdm would write to stderr even when
    piped; the loop looks the name up in its module, so swapping it is enough.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    def tracked(iterable, *args, **kwargs):
        items = list(iterable)
        for done, item in enumerate(items):
            progress(PHASE_READ, done, len(items))
            yield item
        progress(PHASE_READ, len(items), len(items))

    original = gguf_utils.tqdm
    gguf_utils.tqdm = tracked
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _load_gguf(gguf: Path, progress: ProgressFn):
    warm.wait()  # transformers may still be importing in the background (edgellm.warm)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    with _gguf_progress(progress):
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tokenizer


def _weights(model) -> dict:
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return {name: state[name].detach().contiguous().clone() for name in sorted(state)}


def _plain_config(model):
    """The model config without the GGUF quantization marker, so it loads as plain weights."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    return config


def convert_gguf(spec: ModelSpec, out_dir: Path, progress: ProgressFn) -> Manifest:
    """Write the store files for a known model into `out_dir` (an empty directory)."""
    source = f"embedded:{spec.source.module}"
    if isinstance(spec.source, GgufSource):
        return convert_gguf_file(spec.source.path(), spec.id, out_dir, progress, source)
    progress(PHASE_ASSEMBLE, 0, 0)
    gguf = spec.source.assemble(out_dir)
    try:
        return convert_gguf_file(gguf, spec.id, out_dir, progress, source)
    finally:
        gguf.unlink()


def convert_gguf_file(
    gguf: Path, model_id: str, out_dir: Path, progress: ProgressFn, source: str
) -> Manifest:
    """De-quantize a GGUF file into the store files of `model_id` in `out_dir`."""
    progress(PHASE_READ, 0, 0)
    model, tokenizer = _load_gguf(gguf, progress)
    progress(PHASE_READ, 1, 1)
    return write_store(model, tokenizer, model_id, out_dir, progress, source)


def convert_dir(
    src: Path, model_id: str, out_dir: Path, progress: ProgressFn, source: str
) -> Manifest:
    """Re-write a transformers model directory as the store files of `model_id`."""
    warm.wait()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    progress(PHASE_LOAD, 0, 1)
    model = AutoModelForCausalLM.from_pretrained(str(src), dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    progress(PHASE_LOAD, 1, 1)
    return write_store(model, tokenizer, model_id, out_dir, progress, source)


def write_store(
    model, tokenizer, model_id: str, out_dir: Path, progress: ProgressFn, source: str
) -> Manifest:
    """The store files of a loaded model: weights, config, generation config, tokenizer,
    manifest."""
    from safetensors.torch import save_file

    tensors = _weights(model)
    progress(PHASE_WRITE, 0, 1)
    weights = out_dir / WEIGHTS_NAME
    save_file(tensors, str(weights), metadata=_SAFETENSORS_METADATA)
    config = _plain_config(model)
    config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    progress(PHASE_WRITE, 1, 1)

    size = weights.stat().st_size
    progress(PHASE_HASH, 0, size)
    cid = file_cid(weights, progress=lambda done, total: progress(PHASE_HASH, done, total))
    manifest = Manifest(
        id=model_id,
        weights_cid=cid,
        architecture=(config.architectures or [type(model).__name__])[0],
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        context_length=config.max_position_embeddings,
        dtype=str(next(iter(tensors.values())).dtype).removeprefix("torch."),
        weights_bytes=size,
        parameters=sum(t.numel() for t in tensors.values()),
        source=source,
    )
    manifest.write(out_dir)
    return manifest
