"""`model add`: a transformers directory or a GGUF file into the store, checked first.

Every check that can fail fast runs before any weights are read: the path, the files a
model needs, each safetensors file's length against its header, the architecture. The
model is then loaded by transformers and re-written as the store's single
`model.safetensors` (sorted tensors, fixed metadata), so its weights CID depends only on
the weights, never on how the source sharded or named its files.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from edgellm.errors import UnsupportedModel
from edgellm.models import architectures
from edgellm.models.convert import ProgressFn, convert_dir, convert_gguf_file
from edgellm.models.manifest import Manifest
from edgellm.models.store import ModelStore

# Any one of these makes a tokenizer transformers can load.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def default_id(path: Path) -> str:
    """The file or directory name, lower-cased, with other characters as '-'."""
    stem = path.stem if path.is_file() else path.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:64] or "model"


def add_model(
    store: ModelStore, path: Path, model_id: str | None, progress: ProgressFn
) -> Manifest:
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise UnsupportedModel(f"{path}: no such file or directory")
    model_id = model_id or default_id(path)
    if path.is_dir():
        check_dir(path)
        convert, source = convert_dir, f"dir:{path}"
    elif path.suffix.lower() == ".gguf":
        check_gguf(path)
        convert, source = convert_gguf_file, f"gguf:{path}"
    else:
        raise UnsupportedModel(f"{path}: expected a transformers model directory or a .gguf file")
    with store.staging(model_id) as tmp:
        manifest = convert(path, model_id, tmp, progress, source)
        return store.add(model_id, tmp, manifest)


def check_dir(path: Path) -> None:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UnsupportedModel(f"{path}: no config.json (not a transformers model directory)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedModel(f"{config_path}: unreadable: {exc}") from exc
    names = config.get("architectures") or [f"<model_type {config.get('model_type')!r}>"]
    architectures.check_class(names[0])
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise UnsupportedModel(f"{path}: no weights (*.safetensors)")
    for file in weights:
        check_safetensors(file)
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UnsupportedModel(f"{path}: no tokenizer ({', '.join(_TOKENIZER_FILES)})")


def check_safetensors(file: Path) -> None:
    """Refuse a file shorter (or longer) than its header says: a truncated copy."""
    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        tensors = [t for name, t in header.items() if name != "__metadata__"]
        end = max((t["data_offsets"][1] for t in tensors), default=0)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise UnsupportedModel(f"{file}: not a valid safetensors file: {exc}") from exc
    if 8 + header_len + end != size:
        raise UnsupportedModel(
            f"{file}: truncated or corrupt: {size} bytes, header says {8 + header_len + end}"
        )


def check_gguf(path: Path) -> None:
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).get_field("general.architecture")
        name = field.contents() if field is not None else None
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise UnsupportedModel(f"{path}: not a valid GGUF file: {exc}") from exc
    if not name:
        raise UnsupportedModel(f"{path}: GGUF file names no general.architecture")
    architectures.check_gguf(name)
