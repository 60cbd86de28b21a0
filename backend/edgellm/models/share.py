"""Models over IPFS: publish a store entry into this node's Kubo, pull one from the swarm.

A published model is one UnixFS directory: `model.safetensors` added exactly as the weights
CID is computed (CIDv1, raw leaves, 256 KiB chunks, balanced DAG, so its CID *is* the
manifest's `weights_cid`) beside the small files (config, tokenizer, chat template,
generation config, manifest). The directory CID names the whole model; capability records
carry both.

A pull lists the directory (bounded: a CID nobody provides fails within `timeout_s`),
checks what the holder's record claims (the weights CID, the id) against the listing before
fetching the weights, checks the size against the disk budget before fetching a byte,
streams every file from the node's Kubo (bitswap finds the blocks in the swarm's private
network; blocks already fetched stay in Kubo's blockstore, so an interrupted pull resumes
from them), computes each file's CID from the same stream it writes (one pass: no second
read of the weights) against the CID it was listed with, checks the weights against the
manifest, and installs through the store's staging directory: the store never holds half a
model. A failure that is the holder's (unreachable, does not provide the CID, content
that is not what its record claims) raises HolderRefused, so the caller tries another.
"""

from __future__ import annotations

import http.client
import json
import queue
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from edgellm.errors import InvalidRequest, KuboError, StoreError
from edgellm.kv.ipfs import UNIX, _UnixConnection, api_url
from edgellm.models.cid import CHUNK_SIZE, balanced_dag_cid
from edgellm.models.manifest import MANIFEST_NAME, WEIGHTS_NAME, Manifest
from edgellm.models.store import ModelStore

PHASE_PUBLISH = "adding to IPFS"
PHASE_PULL = "pulling"

# The `ipfs add` parameters under which a file's CID equals edgellm.models.cid.file_cid.
_ADD_PARAMS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{CHUNK_SIZE}",
    "pin": "true",
    "progress": "false",
}
_BOUNDARY = "edgellm-model-boundary"
_WRITE_SIZE = 1 << 20
ProgressFn = Callable[[str, int, int], None]


class PullRefused(InvalidRequest):
    """A pull that cannot or must not complete: nobody has the CID, the bytes do not match
    their CIDs, the disk budget is too small."""


class HolderRefused(PullRefused):
    """This holder cannot be pulled from (unreachable, does not provide the CID) or its
    content is not what its record claims: another holder may serve the model."""


@dataclass(frozen=True)
class Claim:
    """What a holder's capability record says the directory holds."""

    model_id: str
    weights_cid: str


@dataclass(frozen=True)
class SharedModel:
    model_id: str
    weights_cid: str
    dir_cid: str


def _parts(directory: Path, name: str) -> Iterator[bytes]:
    """A multipart body Kubo reads as directory `name` holding the entry's files."""
    head = f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
    yield (head + "Content-Type: application/x-directory\r\n\r\n\r\n").encode()
    for file in sorted(p for p in directory.iterdir() if p.is_file()):
        path = quote(f"{name}/{file.name}", safe="")
        yield (
            f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{path}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield b"\r\n"
    yield f"--{_BOUNDARY}--\r\n".encode()


def _client(api: str, timeout: httpx.Timeout | float) -> tuple[httpx.Client, str]:
    """An HTTP client for the Kubo RPC API at `api` and its base URL: over the unix socket
    the node's own Kubo listens on (in its private repository), or over TCP."""
    url = api_url(api)
    if url.startswith(UNIX):
        transport = httpx.HTTPTransport(uds=url.removeprefix(UNIX))
        return httpx.Client(transport=transport, timeout=timeout), "http://kubo"
    return httpx.Client(timeout=timeout), url


def _post(api: str, command: str, *, timeout: httpx.Timeout | float, **kwargs) -> httpx.Response:
    client, base = _client(api, timeout)
    with client:
        return client.post(f"{base}/api/v0/{command}", **kwargs)


@contextmanager
def _stream(
    api: str, command: str, *, timeout: httpx.Timeout | float, **kwargs
) -> Iterator[httpx.Response]:
    client, base = _client(api, timeout)
    with client, client.stream("POST", f"{base}/api/v0/{command}", **kwargs) as reply:
        yield reply


def publish(store: ModelStore, model_id: str, api: str) -> SharedModel:
    """Add (and pin) a store entry in the Kubo at `api`; refuse if Kubo's CID for the
    weights is not the manifest's (the two CID computations must agree)."""
    manifest = store.manifest(model_id)
    if manifest is None:
        raise StoreError(f"model {model_id!r} is not in the store")
    directory = store.path(model_id)
    try:
        reply = _post(
            api,
            "add",
            params={**_ADD_PARAMS, "wrap-with-directory": "false"},
            content=_parts(directory, model_id),
            headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"},
            timeout=httpx.Timeout(30.0, read=None),
        )
    except httpx.HTTPError as exc:
        raise KuboError(f"add {model_id}: {exc}") from exc
    if reply.status_code != 200:
        raise KuboError(f"add {model_id}: HTTP {reply.status_code}: {reply.text[:200]}")
    added = {e["Name"]: e["Hash"] for e in map(json.loads, reply.text.splitlines())}
    weights = added.get(f"{model_id}/{WEIGHTS_NAME}")
    if weights != manifest.weights_cid:
        raise StoreError(
            f"Kubo added the weights as {weights}, the manifest says {manifest.weights_cid}"
        )
    return SharedModel(model_id, manifest.weights_cid, added[model_id])


@dataclass(frozen=True)
class _Entry:
    name: str
    cid: str
    size: int


def _list(api: str, dir_cid: str, timeout_s: float) -> list[_Entry]:
    try:
        reply = _post(
            api,
            "ls",
            params={"arg": dir_cid, "timeout": f"{timeout_s}s", "size": "true"},
            timeout=timeout_s + 5,
        )
    except httpx.HTTPError as exc:
        raise KuboError(f"ls {dir_cid}: {exc}") from exc
    if reply.status_code != 200:
        message = reply.text[:200]
        if "deadline" in message or "timeout" in message or "context" in message:
            raise HolderRefused(f"no peer in the swarm provided {dir_cid} within {timeout_s:.0f}s")
        raise HolderRefused(f"cannot list {dir_cid}: {message}")
    links = reply.json()["Objects"][0]["Links"]
    if not links or any(link["Type"] != 2 for link in links):
        raise HolderRefused(f"{dir_cid} is not a model directory (files only)")
    return [_Entry(link["Name"], link["Hash"], int(link["Size"])) for link in links]


class _StreamCid:
    """The CID of a file's bytes, computed on a thread of its own as they arrive: hashlib
    releases the GIL, so hashing overlaps receiving and writing instead of following it
    (a second read of the file, or hashing in the receiving thread, costs throughput)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=16)
        self._cid: str | None = None
        self._error: BaseException | None = None
        self._ended = False  # the end of the input was taken from the queue
        self._thread = threading.Thread(target=self._run, name="edgellm-pull-cid", daemon=True)
        self._thread.start()

    def feed(self, data: bytes | bytearray) -> None:
        self._queue.put(data)

    def close(self) -> str:
        """The CID of everything fed (waits for the thread)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._cid is not None
        return self._cid

    def _chunks(self) -> Iterator[bytes]:
        """The bytes fed, in CHUNK_SIZE pieces (the importer's leaves)."""
        pending = bytearray()
        while (data := self._queue.get()) is not None:
            pending += data
            while len(pending) >= CHUNK_SIZE:
                yield bytes(pending[:CHUNK_SIZE])
                del pending[:CHUNK_SIZE]
        self._ended = True
        if pending:
            yield bytes(pending)

    def _run(self) -> None:
        try:
            self._cid = balanced_dag_cid(self._chunks())
        except BaseException as exc:  # handed to close(), in the caller's thread
            self._error = exc
            while not self._ended and self._queue.get() is not None:  # let feed(), close() end
                pass


@contextmanager
def _cat(api: str, cid: str, timeout_s: float) -> Iterator[http.client.HTTPResponse]:
    """Kubo's `cat` of `cid` through http.client, not httpx: Kubo writes the reply in
    pieces of a few KiB, and http.client decodes the chunking through a C buffer, several
    times cheaper per piece than h11 (which made the pull slower than `ipfs get`)."""
    url = api_url(api)
    if url.startswith(UNIX):
        conn: http.client.HTTPConnection = _UnixConnection(url.removeprefix(UNIX), timeout_s)
    else:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        conn.request("POST", f"/api/v0/cat?arg={quote(cid, safe='')}")
        yield conn.getresponse()
    finally:
        conn.close()


def _fetch(api: str, entry: _Entry, out: Path, progress: Callable[[int], None]) -> None:
    """Stream one file into `out`, refusing it unless its bytes have the listed CID."""
    cid = _StreamCid()
    try:
        with _cat(api, entry.cid, 300.0) as reply, out.open("wb") as f:
            if reply.status != 200:
                raise HolderRefused(f"cannot fetch {entry.name} ({entry.cid}): HTTP {reply.status}")
            # Blocks of _WRITE_SIZE: a few hundred writes, hand-overs to the hashing
            # thread and progress calls per file, however Kubo pieces its reply.
            while block := reply.read(_WRITE_SIZE):
                f.write(block)
                cid.feed(block)
                progress(len(block))
    except (OSError, http.client.HTTPException) as exc:
        raise KuboError(f"cat {entry.cid}: {exc}") from exc
    finally:
        got = cid.close()
    if got != entry.cid:
        raise HolderRefused(f"{entry.name}: the bytes fetched have CID {got}, not {entry.cid}")


def _check(tmp: Path, entries: list[_Entry], claim: Claim | None) -> Manifest:
    """The manifest, if the directory's weights are its manifest's and the record's."""
    manifest = Manifest.read(tmp)
    weights = next((e for e in entries if e.name == WEIGHTS_NAME), None)
    if weights is None or weights.cid != manifest.weights_cid:
        raise HolderRefused(
            f"the directory's weights are not the manifest's ({manifest.weights_cid})"
        )
    if claim is not None and manifest.id != claim.model_id:
        raise HolderRefused(f"the directory holds model {manifest.id!r}, not {claim.model_id!r}")
    return manifest


def _check_claim(dir_cid: str, entries: list[_Entry], claim: Claim | None) -> None:
    """Before fetching the weights: the listed weights are the ones the record claims."""
    weights = next(e.cid for e in entries if e.name == WEIGHTS_NAME)
    if claim is not None and weights != claim.weights_cid:
        raise HolderRefused(
            f"{dir_cid} holds weights {weights}, not {claim.weights_cid} as its holder's "
            "record claims"
        )


def bitswap_received(api: str) -> int:
    """Bytes the Kubo at `api` has received over bitswap since it started."""
    try:
        reply = _post(api, "stats/bitswap", timeout=10.0)
        reply.raise_for_status()
    except httpx.HTTPError as exc:
        raise KuboError(f"stats bitswap: {exc}") from exc
    return int(reply.json()["DataReceived"])


def connect(api: str, addr: str, timeout_s: float = 10.0) -> None:
    """Connect the Kubo at `api` to a holder's Kubo (multiaddr ending in /p2p/<id>): with
    routing off, bitswap asks only the peers it is connected to."""
    try:
        reply = _post(
            api,
            "swarm/connect",
            params={"arg": addr, "timeout": f"{timeout_s}s"},
            timeout=timeout_s + 5,
        )
    except httpx.HTTPError as exc:
        raise KuboError(f"swarm connect {addr}: {exc}") from exc
    if reply.status_code != 200:
        raise HolderRefused(f"cannot connect to holder {addr}: {reply.text[:200]}")


def _connect_any(api: str, addrs: tuple[str, ...]) -> None:
    """Connect to every address that answers; refuse only when none does (a record lists
    addresses some of which may not be reachable from here)."""
    failures = []
    for addr in addrs:
        try:
            connect(api, addr)
        except HolderRefused as exc:
            failures.append(exc)
    if addrs and len(failures) == len(addrs):
        raise failures[0]


def _clear_stale(store: ModelStore, prefix: str) -> None:
    """Remove staging directories of this pull that a killed pull left behind (two pulls of
    the same directory at once are not supported: the later one clears the earlier's)."""
    for stale in store.models_dir.glob(f".{prefix}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def pull(
    store: ModelStore,
    dir_cid: str,
    api: str,
    progress: ProgressFn,
    disk_budget_bytes: int | None = None,
    timeout_s: float = 30.0,
    holders: tuple[str, ...] = (),
    claim: Claim | None = None,
) -> Manifest:
    """Fetch the model directory `dir_cid` through the Kubo at `api` into the store,
    connecting it first to `holders` (Kubo multiaddrs: one holder's addresses, or several
    holders; one that answers is enough); `claim` is what the holder's record says the
    directory holds."""
    _connect_any(api, holders)
    entries = _list(api, dir_cid, timeout_s)
    names = {e.name for e in entries}
    if MANIFEST_NAME not in names or WEIGHTS_NAME not in names:
        raise HolderRefused(f"{dir_cid} has no {MANIFEST_NAME} and {WEIGHTS_NAME}")
    _check_claim(dir_cid, entries, claim)
    total = sum(e.size for e in entries)
    store.models_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.models_dir).free
    budget = min(free, disk_budget_bytes) if disk_budget_bytes is not None else free
    if total > budget:
        raise PullRefused(f"the model needs {total} bytes, the disk budget allows {budget}")
    prefix = f"pull-{dir_cid[-16:]}"
    _clear_stale(store, prefix)
    with store.staging(prefix) as tmp:
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            progress(PHASE_PULL, done, total)

        for entry in sorted(entries, key=lambda e: e.name):
            _fetch(api, entry, tmp / entry.name, step)
        manifest = _check(tmp, entries, claim)
        # _fetch computed the weights' CID from the bytes it wrote, and _check matched it
        # to the manifest's: the install need not read 500 MB again.
        return store.add(manifest.id, tmp, manifest, weights_hashed=True)
