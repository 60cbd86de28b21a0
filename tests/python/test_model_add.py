"""`python -m edgellm.models add|list|show|rm` (what `edgellm model ...` runs): models
from a transformers directory and from a GGUF file, and each bad input refused with one
line and no entry left behind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgellm.models.__main__ import main
from edgellm.models.registry import ModelRegistry
from tests.python.tiny_models import build, write_gguf

from .conftest import MODEL_ID

Tool = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def tool(capsys) -> Tool:
    """The tool's main in this process (a subprocess per call would import torch each
    time); its stdout, stderr and exit status as a subprocess would give them."""

    def run(store: Path, *args: str) -> subprocess.CompletedProcess:
        argv = [*args, "--models-dir", str(store)]
        capsys.readouterr()
        code = main(argv)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


@pytest.fixture
def refused(tool: Tool) -> Callable[..., None]:
    return lambda store, want, *args: _check_refused(tool(store, *args), store, want)


def _check_refused(done: subprocess.CompletedProcess, store: Path, want: str) -> None:
    assert done.returncode == 1, done
    assert done.stdout == ""
    line, _, rest = done.stderr.partition("\n")
    assert rest == "" and line.startswith("error: ") and want in line, done.stderr
    assert not [p for p in store.iterdir() if p.name.startswith(".") and "tmp" in p.name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, store_dir: Path) -> Path:
    return build("qwen2", tmp_path_factory.mktemp("src") / "qwen2", store_dir)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


def test_add_is_quiet_when_piped(store: Path, tiny: Path) -> None:
    cmd = [sys.executable, "-m", "edgellm.models", "add", str(tiny), "--models-dir", str(store)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert done.stderr == "" and done.stdout.startswith("qwen2 bafy")


def test_add_list_show_rm(store: Path, tiny: Path, tool, refused) -> None:
    added = tool(store, "add", str(tiny), "--id", "tiny")
    assert added.returncode == 0, added.stderr
    model_id, cid = added.stdout.split()
    assert model_id == "tiny" and cid.startswith("bafy")
    again = tool(store, "add", str(tiny), "--id", "tiny")  # same weights: a no-op
    assert again.returncode == 0 and again.stdout == added.stdout

    rows = json.loads(tool(store, "list", "--json").stdout)["models"]
    row = next(r for r in rows if r["id"] == "tiny")
    assert row["architecture"] == "Qwen2ForCausalLM" and row["weights_cid"] == cid
    assert row["num_layers"] == 4 and row["parameters"] > 0 and row["weights_bytes"] > 0
    assert row["source"] == f"dir:{tiny}"
    table = tool(store, "list").stdout
    assert "tiny" in table and "Qwen2ForCausalLM" in table and cid in table
    assert json.loads(tool(store, "show", "tiny", "--json").stdout)["weights_cid"] == cid

    assert tool(store, "rm", "tiny").returncode == 0
    refused(store, "unknown model 'tiny'", "show", "tiny")
    assert not (store / "tiny").exists()


def test_nonexistent_path(store: Path, refused) -> None:
    refused(store, "no such file or directory", "add", str(store / "nope"))


def test_directory_without_weights(store: Path, tiny: Path, tmp_path: Path, refused) -> None:
    bare = shutil.copytree(tiny, tmp_path / "bare")
    (bare / "model.safetensors").unlink()
    refused(store, "no weights", "add", str(bare))


def test_directory_without_tokenizer(store: Path, tiny: Path, tmp_path: Path, refused) -> None:
    bare = shutil.copytree(tiny, tmp_path / "bare")
    for f in bare.glob("tokenizer*"):
        f.unlink()
    refused(store, "no tokenizer", "add", str(bare))


def test_truncated_safetensors(store: Path, tiny: Path, tmp_path: Path, refused) -> None:
    cut = shutil.copytree(tiny, tmp_path / "cut")
    weights = cut / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    refused(store, "truncated", "add", str(cut))


def test_unsupported_architecture_directory(
    store: Path, tiny: Path, tmp_path: Path, refused
) -> None:
    other = shutil.copytree(tiny, tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["MambaForCausalLM"]
    (other / "config.json").write_text(json.dumps(config))
    refused(store, "supported: Gemma3ForCausalLM, LlamaForCausalLM", "add", str(other))


def test_gguf_of_unsupported_architecture(store: Path, tmp_path: Path, refused) -> None:
    gguf = write_gguf(tmp_path / "mamba.gguf", "mamba")
    refused(store, "'mamba' is not supported; supported: gemma3, llama", "add", str(gguf))


def test_id_naming_other_weights(
    store: Path, tiny: Path, tmp_path: Path, store_dir, tool, refused
) -> None:
    assert tool(store, "add", str(tiny), "--id", "taken").returncode == 0
    other = build("qwen2", tmp_path / "other", store_dir, seed=1)
    refused(store, "already names other weights", "add", str(other), "--id", "taken")
    refused(store, "bad model id", "add", str(other), "--id", "../escape")


def test_gguf_file_converts_as_the_embedded_model(store: Path, models_dir: Path, tool) -> None:
    """The embedded GGUF added by path gives the very weights (same CID) that the store
    serves as smollm2-135m, which test_engine holds equal to generate."""
    gguf = ModelRegistry().get(MODEL_ID).source.path()
    added = tool(store, "add", str(gguf), "--id", "smol-gguf")
    assert added.returncode == 0, added.stderr
    expected = json.loads((models_dir / MODEL_ID / "edgellm-model.json").read_text())
    assert added.stdout.split() == ["smol-gguf", expected["weights_cid"]]
