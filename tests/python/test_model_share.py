"""Models over IPFS between two real Kubo daemons: one publishes a store entry, the other
pulls it by directory CID into its own store, verified file by file; a CID nobody has, a
disk budget too small, a directory whose weights are not its manifest's and a directory
that is not what its holder's record claims are refused."""

from __future__ import annotations

import filecmp
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from edgellm.models.add import add_model
from edgellm.models.cid import raw_cid
from edgellm.models.manifest import MANIFEST_NAME, WEIGHTS_NAME
from edgellm.models.share import (
    _BOUNDARY,
    PHASE_PULL,
    Claim,
    HolderRefused,
    PullRefused,
    _parts,
    publish,
    pull,
)
from edgellm.models.store import ModelStore
from tests.python.tiny_models import build, quiet


@pytest.fixture(scope="module")
def holder(tmp_path_factory, store_dir: Path, kubo_pair) -> tuple[ModelStore, str]:
    """Store A with a tiny model, published into Kubo A; returns (store, dir CID)."""
    root = tmp_path_factory.mktemp("share")
    store = ModelStore(root / "a")
    add_model(store, build("qwen2", root / "src", store_dir), "tiny", quiet)
    shared = publish(store, "tiny", kubo_pair[0].api)
    assert shared.weights_cid == store.manifest("tiny").weights_cid
    return store, shared.dir_cid


def test_pull_installs_the_same_files(holder, kubo_pair, tmp_path: Path) -> None:
    a_store, dir_cid = holder
    b_store = ModelStore(tmp_path / "b")
    seen: list[tuple[str, int, int]] = []
    manifest = pull(b_store, dir_cid, kubo_pair[1].api, lambda *p: seen.append(p))
    assert manifest == a_store.manifest("tiny") == b_store.manifest("tiny")
    a, b = a_store.path("tiny"), b_store.path("tiny")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert filecmp.cmpfiles(a, b, names, shallow=False)[0] == names
    pulled = [p for p in seen if p[0] == PHASE_PULL]
    assert pulled[-1][1] == pulled[-1][2] > 0


def test_cid_nobody_has(kubo_pair, tmp_path: Path) -> None:
    nobody = raw_cid(f"no peer holds this {uuid.uuid4()}".encode())
    with pytest.raises(PullRefused, match=f"no peer in the swarm provided {nobody} within 3s"):
        pull(ModelStore(tmp_path / "b"), nobody, kubo_pair[1].api, quiet, timeout_s=3)


def test_disk_budget_too_small_is_refused_before_fetching(holder, kubo_pair, tmp_path) -> None:
    a_store, dir_cid = holder
    b = kubo_pair[1]
    # Forget the blocks an earlier pull left (gc streams one JSON line per block).
    httpx.post(f"{b.api}/api/v0/repo/gc", timeout=60).raise_for_status()
    with pytest.raises(PullRefused, match="disk budget"):
        pull(ModelStore(tmp_path / "b"), dir_cid, b.api, quiet, disk_budget_bytes=1_000_000)
    # Listing read the directory and each file's root node for its size; none of the
    # weights' ~100 leaves was fetched.
    local = httpx.post(f"{b.api}/api/v0/refs/local", timeout=60).text.splitlines()
    assert len(local) < 20 < a_store.manifest("tiny").weights_bytes // (256 * 1024)
    assert not (tmp_path / "b" / "tiny").exists()


def test_weights_not_the_manifests_are_refused(holder, kubo_pair, tmp_path, store_dir) -> None:
    """A holder whose directory pairs a manifest with other weights (made by adding such a
    directory straight into Kubo: `publish` itself refuses to)."""
    a_store, _ = holder
    forged = tmp_path / "forged"
    shutil.copytree(a_store.path("tiny"), forged)
    other = ModelStore(tmp_path / "other")
    add_model(other, build("qwen2", tmp_path / "src", store_dir, seed=1), "tiny", quiet)
    shutil.copy(other.path("tiny") / WEIGHTS_NAME, forged / WEIGHTS_NAME)
    reply = httpx.post(
        f"{kubo_pair[0].api}/api/v0/add",
        params={"cid-version": "1", "raw-leaves": "true", "chunker": "size-262144"},
        content=_parts(forged, "tiny"),
        headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"},
    )
    dir_cid = [line for line in reply.text.splitlines() if '"Name":"tiny"' in line][0]
    dir_cid = httpx.Response(200, content=dir_cid).json()["Hash"]
    b_store = ModelStore(tmp_path / "b")
    with pytest.raises(PullRefused, match="weights are not the manifest's"):
        pull(b_store, dir_cid, kubo_pair[1].api, quiet)
    assert not (tmp_path / "b" / "tiny").exists()
    assert (forged / MANIFEST_NAME).is_file()


def test_a_directory_that_is_not_what_the_record_claims_is_refused(
    holder, kubo_pair, tmp_path
) -> None:
    """The holder's record claims other weights (refused before the weights are fetched)
    or another id (refused before install): HolderRefused, so the caller tries another."""
    a_store, dir_cid = holder
    b = kubo_pair[1]
    httpx.post(f"{b.api}/api/v0/repo/gc", timeout=60).raise_for_status()
    other = raw_cid(b"other weights")
    with pytest.raises(HolderRefused, match=f"not {other} as its holder's record claims"):
        pull(ModelStore(tmp_path / "b"), dir_cid, b.api, quiet, claim=Claim("tiny", other))
    local = httpx.post(f"{b.api}/api/v0/refs/local", timeout=60).text.splitlines()
    assert len(local) < 20 < a_store.manifest("tiny").weights_bytes // (256 * 1024)
    weights = a_store.manifest("tiny").weights_cid
    with pytest.raises(HolderRefused, match="holds model 'tiny', not 'tiny2'"):
        pull(ModelStore(tmp_path / "b"), dir_cid, b.api, quiet, claim=Claim("tiny2", weights))
    assert not any((tmp_path / "b").iterdir())
