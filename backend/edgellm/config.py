"""Typed backend configuration: defaults < YAML file < environment < command-line flags.

The YAML file is the node's `edgellm.yaml` (in the data directory, or given with
`--config`); the backend reads only its `backend:` section. Environment variables are
read here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgellm.errors import InvalidRequest

CONFIG_FILE_NAME = "edgellm.yaml"
DEVICES = ("auto", "cpu", "cuda")

# Environment variable -> config field.
ENV_VARS = {
    "EDGELLM_DATA_DIR": "data_dir",
    "EDGELLM_MODELS_DIR": "models_dir",
    "EDGELLM_DEVICE": "device",
    "EDGELLM_ENGINE": "engine",
}
# Environment variable -> kv: field.
KV_ENV_VARS = {
    "EDGELLM_IPFS_API": "ipfs_api",
    "EDGELLM_IPFS_GATEWAY": "ipfs_gateway",
}


@dataclass(frozen=True)
class KVConfig:
    """The `kv:` section: KV-cache blocks over IPFS and the prefix cache."""

    # Kubo RPC API, "http://127.0.0.1:5001" or "/ip4/127.0.0.1/tcp/5001"; "" turns the
    # KV cache off. Env EDGELLM_IPFS_API (the node sets it for the Kubo it runs).
    ipfs_api: str = ""
    # The same Kubo's HTTP gateway, "http://127.0.0.1:8080", for reading blocks (2-3x
    # faster than the RPC API's block/get); "" reads them through the RPC API. Env
    # EDGELLM_IPFS_GATEWAY (the node sets it for the Kubo it runs).
    ipfs_gateway: str = ""
    # Tokens per KV block; prompts are cached in whole blocks.
    block_size: int = 16
    # Bytes of KV blocks this peer keeps pinned, in MiB; least recently used go first.
    max_store_mb: int = 1024
    # Seconds to wait for one block from Kubo (local or over bitswap) before recomputing.
    fetch_timeout_s: float = 5.0
    # Recompute one cached block per request and compare (edgellm.kv.spot); off only to
    # measure what it costs (bench spot_check_overhead).
    spot_check: bool = True
    # Where the block index lives. Default <data_dir>/kv.
    dir: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.ipfs_api)


@dataclass(frozen=True)
class BackendConfig:
    # Node data directory; holds edgellm.yaml. Default $XDG_DATA_HOME/edgellm or
    # ~/.local/share/edgellm.
    data_dir: Path
    # Model store root: one directory per model id. Default <data_dir>/models.
    models_dir: Path
    # Where engines compute: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
    device: str = "auto"
    # Engine used when a request does not name one; see edgellm.engine.registry.
    engine: str = "torch"
    # Seconds a SIGTERM'd server waits for running requests before it exits.
    shutdown_grace_s: float = 5.0
    # Measure prefill/decode speed once per loaded model (reported by Control.Status).
    calibrate: bool = True
    # Continuous batching: sequences one engine decodes together (its slot pool) ...
    max_batch: int = 8
    # ... and the memory the pool's KV cache may take, for the whole model's layers; a
    # slot holds kv_budget_mb / max_batch of it. A request longer than a slot runs alone.
    kv_budget_mb: int = 512
    # Memory the loaded models' weights may take together, in MiB; 0 (default) is half of
    # this machine's memory (the GPU's on CUDA) when the backend starts. A load that does
    # not fit unloads the least recently used idle models first; a model larger than the
    # whole budget is refused (edgellm.server.models).
    model_memory_mb: int = 0
    # KV-cache blocks over IPFS (the `kv:` mapping in the file).
    kv: KVConfig = dataclasses.field(default_factory=KVConfig)


def default_data_dir(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "edgellm"
    return Path(env.get("HOME") or Path.home()) / ".local" / "share" / "edgellm"


def _read_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidRequest(f"config file {path}: top level must be a mapping")
    section = doc.get("backend") or {}
    if not isinstance(section, dict):
        raise InvalidRequest(f"config file {path}: 'backend' must be a mapping")
    known = {f.name for f in dataclasses.fields(BackendConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise InvalidRequest(f"config file {path}: unknown backend keys {unknown}")
    return dict(section)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {field: env[var] for var, field in ENV_VARS.items() if env.get(var)}


def _kv_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    return {field: env[var] for var, field in KV_ENV_VARS.items() if env.get(var)}


def load_config(
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> BackendConfig:
    """Merge defaults, the YAML file, the environment and `overrides` (flags; None = unset)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    layered_env = _from_env(env)
    data_dir = Path(
        flags.get("data_dir") or layered_env.get("data_dir") or default_data_dir(env)
    ).expanduser()
    path = Path(config_file) if config_file else data_dir / CONFIG_FILE_NAME
    from_file = _read_file(path) if config_file or path.is_file() else {}
    kv_flags = flags.pop("kv", None) or {}
    kv_file = from_file.pop("kv", None) or {}
    if not isinstance(kv_file, dict):
        raise InvalidRequest(f"config file {path}: 'backend.kv' must be a mapping")
    merged: dict[str, Any] = {**from_file, **layered_env, **flags}
    merged["data_dir"] = Path(merged.get("data_dir") or data_dir).expanduser()
    merged["models_dir"] = Path(
        merged.get("models_dir") or merged["data_dir"] / "models"
    ).expanduser()
    kv = {**kv_file, **_kv_from_env(env), **{k: v for k, v in kv_flags.items() if v is not None}}
    merged["kv"] = _kv_validated(kv, merged["data_dir"])
    return _validated(merged)


def _kv_validated(values: dict[str, Any], data_dir: Path) -> KVConfig:
    known = {f.name for f in dataclasses.fields(KVConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidRequest(f"unknown kv keys {unknown}")
    casts = {
        "ipfs_api": str,
        "ipfs_gateway": str,
        "block_size": int,
        "max_store_mb": int,
        "fetch_timeout_s": float,
    }
    if "spot_check" in values and not isinstance(values["spot_check"], bool):
        raise InvalidRequest("kv.spot_check must be true or false")
    for key, cast in casts.items():
        if key in values:
            try:
                values[key] = cast(values[key])
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"kv.{key}: {exc}") from exc
    if values.get("block_size", 16) < 1:
        raise InvalidRequest("kv.block_size must be at least 1")
    if values.get("max_store_mb", 0) < 0:
        raise InvalidRequest("kv.max_store_mb must not be negative")
    if values.get("fetch_timeout_s", 1.0) <= 0:
        raise InvalidRequest("kv.fetch_timeout_s must be positive")
    if values.get("ipfs_api"):
        from edgellm.kv.ipfs import api_url

        try:
            api_url(values["ipfs_api"])
        except ValueError as exc:
            raise InvalidRequest(f"kv.ipfs_api: {exc}") from exc
    if values.get("ipfs_gateway"):
        from edgellm.kv.ipfs import gateway_url

        try:
            values["ipfs_gateway"] = gateway_url(values["ipfs_gateway"])
        except ValueError as exc:
            raise InvalidRequest(f"kv.ipfs_gateway: {exc}") from exc
    values["dir"] = Path(values.get("dir") or data_dir / "kv").expanduser()
    return KVConfig(**values)


def _validated(values: dict[str, Any]) -> BackendConfig:
    if values.get("device", "auto") not in DEVICES:
        raise InvalidRequest(f"device must be one of {list(DEVICES)}, got {values['device']!r}")
    casts = (("shutdown_grace_s", float), ("calibrate", _as_bool))
    ints = (("max_batch", int), ("kv_budget_mb", int), ("model_memory_mb", int))
    for key, cast in (*casts, *ints):
        if key in values:
            try:
                values[key] = cast(values[key])
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"{key}: {exc}") from exc
    for key in ("max_batch", "kv_budget_mb"):
        if values.get(key, 1) < 1:
            raise InvalidRequest(f"{key} must be at least 1, got {values[key]}")
    if values.get("model_memory_mb", 0) < 0:
        got = values["model_memory_mb"]
        raise InvalidRequest(f"model_memory_mb must not be negative, got {got}")
    return BackendConfig(**values)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")
