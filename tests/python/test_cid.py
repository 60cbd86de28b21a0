"""Weights CIDs must equal what `ipfs add --cid-version=1` prints (Kubo 0.42 defaults).

The expected values were produced by Kubo itself (`ipfs add -q --only-hash
--cid-version=1`) on the same patterned files; the sizes cover one raw block, the
chunk boundary, a two-level DAG and a three-level DAG (more than 174 chunks).
"""

from pathlib import Path

import pytest

from edgellm.models.cid import CHUNK_SIZE, MAX_LINKS, file_cid, raw_cid

KUBO_CIDS = {
    0: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    12: "bafkreih76ou3zxjxgy6xapa4j6kreuzwqykxq2hq2tywudyc2dy5ujhzui",
    CHUNK_SIZE: "bafkreibruh455iawsviqslif5c7uurdcfdemh22mtnytyzvnzn75kpejxy",
    CHUNK_SIZE + 1: "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi",
    MAX_LINKS * CHUNK_SIZE + 1: "bafybeib4y7ghw2rq7bracc4xwtxrbzo7cfvagdpte2tmrkgwl6dyard3cm",
}


def _patterned(path: Path, size: int) -> Path:
    pattern = bytes(range(251))
    path.write_bytes((pattern * (size // len(pattern) + 1))[:size])
    return path


@pytest.mark.parametrize("size", sorted(KUBO_CIDS))
def test_file_cid_matches_kubo(tmp_path: Path, size: int) -> None:
    assert file_cid(_patterned(tmp_path / "f", size)) == KUBO_CIDS[size]


def test_raw_cid_of_hello_world() -> None:
    assert (
        raw_cid(b"hello world\n") == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
    )


def test_progress_reports_every_byte(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    file_cid(
        _patterned(tmp_path / "f", 3 * CHUNK_SIZE + 5),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (3 * CHUNK_SIZE + 5, 3 * CHUNK_SIZE + 5)
    assert len(seen) == 4
