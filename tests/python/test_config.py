"""Config precedence: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.config import load_config
from edgellm.errors import InvalidRequest


def test_defaults(tmp_path: Path) -> None:
    config = load_config(env={"HOME": str(tmp_path)})
    assert config.data_dir == tmp_path / ".local/share/edgellm"
    assert config.models_dir == config.data_dir / "models"
    assert (config.device, config.engine) == ("auto", "torch")
    assert (config.max_batch, config.kv_budget_mb) == (8, 512)
    assert config.model_memory_mb == 0  # half the machine's memory (server.budget)


def test_batch_pool_from_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backend:\n  max_batch: 4\n  kv_budget_mb: '64'\n  model_memory_mb: 40\n")
    config = load_config(path, env={"HOME": str(tmp_path)})
    assert (config.max_batch, config.kv_budget_mb, config.model_memory_mb) == (4, 64, 40)


def test_xdg_and_file_in_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "edgellm"
    data.mkdir()
    (data / "edgellm.yaml").write_text("node: {x: 1}\nbackend:\n  device: cpu\n")
    config = load_config(env={"XDG_DATA_HOME": str(tmp_path)})
    assert config.data_dir == data
    assert config.device == "cpu"


def test_env_overrides_file_and_flags_override_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backend:\n  models_dir: /from/file\n  device: cpu\n")
    env = {"HOME": str(tmp_path), "EDGELLM_MODELS_DIR": "/from/env"}
    assert load_config(path, env=env).models_dir == Path("/from/env")
    assert load_config(path, env=env).device == "cpu"
    flags = {"models_dir": "/from/flag", "device": None}
    assert load_config(path, flags, env=env).models_dir == Path("/from/flag")


@pytest.mark.parametrize(
    "text",
    [
        "backend:\n  device: tpu\n",
        "backend:\n  colour: red\n",
        "- a list\n",
        "backend:\n  max_batch: 0\n",
        "backend:\n  kv_budget_mb: lots\n",
        "backend:\n  model_memory_mb: -1\n",
    ],
)
def test_bad_file_is_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequest):
        load_config(path, env={"HOME": str(tmp_path)})
