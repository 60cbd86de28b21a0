"""The backend's heavy imports (torch, transformers), run in a background thread from its
first moment.

They take seconds (about 4.5 s of a backend's 6.6-7 s start on a 2-core machine), and the
services need none of them to start serving: the server's modules keep torch out of their
module level (test_imports.py holds them to it). So the backend starts this thread, then
serves. What this buys is a cold split's first token: the requester's backend heads the
Ray cluster, and the head's start and the workers' joins (seconds of `ray start`) now run
while transformers imports, where before they waited behind it.

transformers' lazily loaded attributes are not safe to resolve from two threads at once (a
second thread can find a half-initialised submodule: "cannot import name 'AutoConfig'").
So every place in the backend that first imports transformers-based code waits for this
thread to finish (`wait()`): the engine registry, a cluster plan's build, model
conversion. torch is an ordinary module; Python's import locks already make a second
importer wait for it.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

log = logging.getLogger(__name__)

# In the order the engine imports them; transformers' auto classes pull in its modeling
# machinery (modeling_utils, masking utilities), the largest part after torch.
WARM_MODULES = (
    "torch",
    "safetensors.torch",
    "transformers",
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
)

_thread: threading.Thread | None = None
_guard = threading.Lock()


def start() -> None:
    """Start importing WARM_MODULES in a daemon thread (once per process)."""
    global _thread
    with _guard:
        if _thread is None:
            _thread = threading.Thread(target=_import_all, name="warm-imports", daemon=True)
            _thread.start()


def wait() -> None:
    """Return once the background imports have ended; at once if none were started."""
    with _guard:
        thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def _import_all() -> None:
    started = time.monotonic()
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # whoever needs the module imports it again and raises
            log.warning("background import of %s failed: %s", name, exc)
            return
    log.info("torch and transformers imported in %.2fs", time.monotonic() - started)
