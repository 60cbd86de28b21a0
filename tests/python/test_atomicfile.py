"""edgellm.atomicfile: a file is replaced whole, fsynced with its directory, and a link
planted at the target is replaced, never followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgellm import atomicfile


def test_write_replaces_whole_and_fsyncs_file_and_directory(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # observes only: the real fsync still runs
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomicfile.write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert synced == ["file", "dir"]  # the data before the rename, the rename after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]  # no temporary left


def test_a_planted_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    target = tmp_path / "index.json"
    target.symlink_to(victim)
    atomicfile.write(target, b"mine")
    assert victim.read_bytes() == b"keep"
    assert not target.is_symlink() and target.read_bytes() == b"mine"


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        atomicfile.write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]
