"""Engine names -> implementation paths, imported only when chosen.

`import vllm` (heavy, GPU-only) must never happen unless the vllm engine is chosen, so
implementations are named by "module:Class" strings, as vLLM registers KV connectors.
"""

from __future__ import annotations

import importlib

from edgellm.engine.base import Engine
from edgellm.errors import InvalidRequest, Unavailable

ENGINES: dict[str, str] = {
    "torch": "edgellm.engine.torch.engine:TorchEngine",
    # "vllm": "edgellm.engine.vllm.engine:VllmEngine",  # a later issue
}


def engine_class(name: str) -> type[Engine]:
    path = ENGINES.get(name)
    if path is None:
        raise InvalidRequest(
            f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}"
        )
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(f"engine {name!r} cannot be imported: {exc}") from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise Unavailable(f"{path} is not an Engine")
    return cls
