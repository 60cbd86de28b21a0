"""The model store: one directory per model id under `models_dir`, written atomically.

A conversion writes into a temporary sibling directory and renames it into place, under
an exclusive lock file, so concurrent converters never see or leave a half-written entry.
Every entry, however it came (conversion, `model add`, pull), has its weights hashed
against the manifest's weights CID once, just before the rename (`_install`): weights
that are not the ones the CID names are never installed. Start-up checks only the size
(hashing ~540 MB of the embedded model on every start would cost seconds).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgellm import atomicfile
from edgellm.errors import InvalidRequest, ModelNotFound, StoreError
from edgellm.models.cid import file_cid
from edgellm.models.convert import PHASE_READ, ProgressFn, convert_gguf
from edgellm.models.manifest import FORMAT_VERSION, MANIFEST_NAME, WEIGHTS_NAME, Manifest
from edgellm.models.registry import ModelRegistry

# A model id is a directory name in the store and a word on the wire.
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_id(model_id: str) -> None:
    if not _ID.fullmatch(model_id):
        raise InvalidRequest(
            f"bad model id {model_id!r}: use 1-64 of a-z 0-9 . _ - (starting alphanumeric)"
        )


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


class ModelStore:
    def __init__(self, models_dir: Path, registry: ModelRegistry | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.registry = registry or ModelRegistry()

    def path(self, model_id: str) -> Path:
        """The entry's directory; NOT_FOUND unless the id is known or in the store."""
        self.known(model_id)
        return self.models_dir / model_id

    def known(self, model_id: str) -> None:
        """Raise ModelNotFound unless the registry knows the id or the store holds it
        (a model added with `model add` or pulled)."""
        if model_id in self.registry:
            return
        if _ID.fullmatch(model_id) and (self.models_dir / model_id / MANIFEST_NAME).is_file():
            return
        known = ", ".join(self.ids())
        raise ModelNotFound(f"unknown model {model_id!r}; known models: {known}")

    def ids(self) -> list[str]:
        """Known models and every model in the store."""
        ids = set(self.registry.ids())
        if self.models_dir.is_dir():
            for entry in self.models_dir.iterdir():
                if _ID.fullmatch(entry.name) and (entry / MANIFEST_NAME).is_file():
                    ids.add(entry.name)
        return sorted(ids)

    def add(
        self, model_id: str, tmp: Path, manifest: Manifest, *, weights_hashed: bool = False
    ) -> Manifest:
        """Install the entry written in `tmp` (a `staging` directory) as `model_id`, unless
        the id already names other weights (refused); the same weights are a no-op.
        `weights_hashed`: the caller computed the weights' CID from the very bytes it wrote
        into `tmp` and matched it to the manifest (a pull), so the install does not hash
        them again."""
        with self._locked(model_id):
            current = self._entry(model_id)
            if current is not None and current.weights_cid != manifest.weights_cid:
                raise InvalidRequest(
                    f"model id {model_id!r} already names other weights "
                    f"({current.weights_cid}); choose another --id or remove it first"
                )
            if current is None:
                self._install(tmp, self.models_dir / model_id, check=not weights_hashed)
                return manifest
            return current

    @contextmanager
    def staging(self, model_id: str) -> Iterator[Path]:
        """An empty directory beside the store's entries, removed afterwards unless
        installed: a writer fills it, then `add` renames it into place."""
        check_id(model_id)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}.tmp-", dir=self.models_dir))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def remove(self, model_id: str) -> None:
        """Delete an entry: renamed aside first, so readers never see half of it."""
        self.known(model_id)
        with self._locked(model_id):
            target = self.models_dir / model_id
            if not target.exists():
                raise ModelNotFound(f"model {model_id!r} is not in the store")
            stale = target.with_name(f".{model_id}.stale-{os.getpid()}")
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)

    def manifest(self, model_id: str) -> Manifest | None:
        """The manifest of a complete, current entry, or None when it is not in the store."""
        self.known(model_id)
        return self._entry(model_id)

    def _entry(self, model_id: str) -> Manifest | None:
        directory = self.models_dir / model_id
        if not (directory / MANIFEST_NAME).is_file():
            return None
        try:
            manifest = Manifest.read(directory)
        except StoreError:
            return None
        weights = directory / WEIGHTS_NAME
        if manifest.format_version != FORMAT_VERSION or not weights.is_file():
            return None
        if weights.stat().st_size != manifest.weights_bytes:
            return None  # not the weights the manifest's CID names: converted again
        return manifest

    def ensure(self, model_id: str, progress: ProgressFn | None = None) -> Manifest:
        """Convert `model_id` into the store unless it is already there; return its manifest."""
        progress = progress or _no_progress
        manifest = self.manifest(model_id)
        if manifest is not None:
            return manifest
        spec = self.registry.get(model_id)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with self._locked(model_id):
            manifest = self.manifest(model_id)  # another process may have finished meanwhile
            if manifest is not None:
                return manifest
            progress(PHASE_READ, 0, 0)
            tmp = Path(tempfile.mkdtemp(prefix=f".{model_id}.tmp-", dir=self.models_dir))
            try:
                manifest = convert_gguf(spec, tmp, progress)
                self._install(tmp, self.models_dir / model_id)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return manifest

    @contextmanager
    def _locked(self, model_id: str) -> Iterator[None]:
        lock_path = self.models_dir / f".{model_id}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _install(tmp: Path, target: Path, *, check: bool = True) -> None:
        """Rename a written entry into place once its weights are the ones its manifest's
        CID names (StoreError otherwise). Every file and the directory are fsynced first
        and the parent after: a crash leaves the old entry or the whole new one, never a
        renamed directory whose weights were still in the page cache."""
        os.chmod(tmp, 0o755)
        for child in tmp.iterdir():
            os.chmod(child, 0o644)  # mkdtemp and safetensors create owner-only files
            if child.is_file():
                fd = os.open(child, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        atomicfile.fsync_dir(tmp)
        if check:
            check_weights(tmp, target.name)
        if target.exists():
            # An incomplete or outdated entry; we hold the lock, so nobody else writes it.
            stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
            os.rename(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(tmp, target)
        atomicfile.fsync_dir(target.parent)


def check_weights(entry: Path, model_id: str) -> None:
    """Refuse an entry whose weights' CID is not its manifest's."""
    expected = Manifest.read(entry).weights_cid
    actual = file_cid(entry / WEIGHTS_NAME)
    if actual != expected:
        raise StoreError(
            f"model {model_id!r} not installed: its weights have CID {actual}, "
            f"its manifest names {expected}"
        )
