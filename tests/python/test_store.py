"""The model store: manifest and CID are stable on reload; loading reads the store only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgellm.errors import StoreError
from edgellm.models.add import add_model
from edgellm.models.cid import file_cid
from edgellm.models.manifest import WEIGHTS_NAME, Manifest
from edgellm.models.store import ModelStore

from .conftest import MODEL_ID
from .tiny_models import build, quiet


def test_manifest_describes_the_model(store_dir: Path) -> None:
    manifest = Manifest.read(store_dir)
    assert manifest.id == MODEL_ID
    assert (manifest.num_layers, manifest.hidden_size) == (30, 576)
    assert manifest.context_length == 8192
    assert manifest.architecture == "LlamaForCausalLM"
    assert manifest.dtype == "float32"
    assert manifest.weights_bytes == (store_dir / WEIGHTS_NAME).stat().st_size
    assert manifest.weights_cid.startswith("bafy")


def test_reload_gives_same_cid_and_manifest(models_dir: Path, store_dir: Path) -> None:
    before = (store_dir / "edgellm-model.json").read_text()
    manifest = ModelStore(models_dir).ensure(MODEL_ID)  # already there: no conversion
    assert (store_dir / "edgellm-model.json").read_text() == before
    assert file_cid(store_dir / WEIGHTS_NAME) == manifest.weights_cid


def test_tied_head_is_not_stored(store_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(store_dir / WEIGHTS_NAME), framework="pt") as f:
        names = set(f.keys())
    assert "lm_head.weight" not in names
    assert "model.embed_tokens.weight" in names
    assert json.loads((store_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_prepare_cli_is_quiet_when_piped(models_dir: Path, store_dir: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "edgellm.models",
        "prepare",
        "--models-dir",
        str(models_dir),
    ]
    done = subprocess.run([*cmd, MODEL_ID], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(store_dir)
    assert done.stderr == ""
    bad = subprocess.run([*cmd, "no-such-model"], check=False, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "unknown model 'no-such-model'" in bad.stderr


def test_truncated_weights_are_not_installed(tmp_path: Path, store_dir: Path) -> None:
    # A crash that left the weights short (written, renamed, never synced) must not pass
    # for the model whose CID the manifest names: the store converts it again.
    entry = tmp_path / MODEL_ID
    entry.mkdir()
    Manifest.read(store_dir).write(entry)
    (entry / WEIGHTS_NAME).write_bytes(b"\0" * 1000)
    assert ModelStore(tmp_path).manifest(MODEL_ID) is None


def test_weights_that_are_not_the_manifests_cid_are_not_installed(
    tmp_path: Path, store_dir: Path
) -> None:
    # An entry written for the store whose weights changed after its CID was computed (a
    # torn write, a bit flip; same size, so the start-up check could not tell): the
    # install hashes them again and refuses, naming both CIDs.
    src = ModelStore(tmp_path / "a")
    manifest = add_model(src, build("qwen2", tmp_path / "src", store_dir), "tiny", quiet)
    store = ModelStore(tmp_path / "b")
    with store.staging("tiny") as staged:
        shutil.copytree(src.path("tiny"), staged, dirs_exist_ok=True)
        weights = staged / WEIGHTS_NAME
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        altered = file_cid(weights)
        expected = f"weights have CID {altered}, its manifest names {manifest.weights_cid}"
        with pytest.raises(StoreError, match=expected):
            store.add("tiny", staged, manifest)
    assert not (tmp_path / "b" / "tiny").exists()
