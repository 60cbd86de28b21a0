"""Private directories of one backend process, for files vLLM's processes share with it.

Each is named after its backend's pid, so the directories of a backend that died without
cleaning up (an engine core's death ends the backend) are removed by the next one that
makes a directory of the same kind. Standard library only: vLLM's processes import it
(through kvfile)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def private_dir(prefix: str, base: Path | None = None) -> Path:
    """A fresh directory `<prefix><pid>-<random>` in `base`, by default /dev/shm (memory)
    when it is there and writable, else the system's temp dir; dead backends' ones of the
    same prefix are swept first."""
    if base is None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    _sweep(base, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))


def _sweep(base: Path, prefix: str) -> None:
    for old in base.glob(f"{prefix}*-*"):
        pid = old.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)  # another user's stays: not ours to remove
