"""Crash-safe file replacement, as internal/atomicfile does it in Go.

The data goes to a fresh temporary file beside the target (mkstemp: O_EXCL, so it follows
no planted symlink), is fsynced, renamed over the target, and the directory is fsynced:
after a crash the target holds the old contents or the new, never part of them, and a
rename that returned survives a power cut.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make renames and creations in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path`'s contents with `data` (mode `mode`); raises OSError."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
