"""A small client for Kubo's HTTP RPC API (POST /api/v0/<command>) and, for reading
blocks, its trustless gateway (GET /ipfs/<cid>, Accept: application/vnd.ipld.raw).

The `ipfshttpclient` package refuses every Kubo release since 0.8 (a version gate in an
unmaintained package), so the backend speaks the RPC API itself. Only what KV blocks need:
id, block/put (raw codec, sha2-256, pinned; many blocks in one request), block/get (with a
timeout), pin/add, pin/rm, repo/gc and swarm/connect. Every failure (connection refused,
HTTP error, Kubo's error body, a timeout) raises KuboError.

It uses the standard library's http.client with one keep-alive connection per thread:
reading ~740 KB block bodies that way measured 2-3x faster than httpx or requests on the
same daemon, and block fetches are on the time-to-first-token path. For the same reason
block_get goes through the gateway when one is given: the RPC API streams a block as a
chunked reply flushed piece by piece, the gateway sends it in one go (98 blocks of 742 KB:
~370 ms against ~130 ms from the local store, and ~120 ms less over bitswap).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from edgellm.errors import KuboError

# Extra seconds the socket waits beyond Kubo's own `timeout` option.
_SLACK_S = 2.0
# A trustless gateway answers this with the block's bytes as stored.
_RAW = {"Accept": "application/vnd.ipld.raw"}
# What may follow /ipfs/ in a gateway path: a CID in base32 or base58 (no path, no query).
_CID = re.compile(r"[A-Za-z0-9]{8,128}")
# A Kubo API or gateway on a unix socket: "unix:/path" (the node passes its own Kubo's so).
UNIX = "unix:"
# A kept-alive connection the server closed meanwhile: reconnect once.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (how the node's own Kubo listens: in its private repo)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("kubo", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Connections:
    """One kept-alive HTTP connection per thread to one server."""

    def __init__(self, base: str) -> None:
        url = urlsplit(base)
        self._socket = base.removeprefix(UNIX) if base.startswith(UNIX) else ""
        self._kind = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[http.client.HTTPConnection] = []

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        if self._socket:
            return _UnixConnection(self._socket, timeout)
        return self._kind(self._host, self._port, timeout=timeout)

    def get(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new(timeout)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    def send(self, method: str, path: str, what: str, timeout: float, **kwargs):
        """(status, body, headers) of one request, reconnecting once if a kept-alive
        connection went stale; any transport failure raises KuboError."""
        for attempt in (1, 2):
            conn = self.get(timeout)
            try:
                conn.request(method, path, **kwargs)
                reply = conn.getresponse()
                return reply.status, reply.read(), reply
            except (http.client.HTTPException, OSError) as exc:
                self.drop(conn)
                if attempt == 1 and isinstance(exc, _STALE):
                    continue
                raise KuboError(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")


class KuboClient:
    def __init__(self, api: str, timeout_s: float = 30.0, gateway: str = "") -> None:
        """`api` is a base URL, e.g. "http://127.0.0.1:5001", a unix socket "unix:/path",
        or a Kubo multiaddr such as "/ip4/127.0.0.1/tcp/5001" or "/unix/path" (the forms
        Kubo writes to $IPFS_PATH/api). `gateway`, when given, is the same Kubo's gateway
        (block reads go through it), as a URL or a socket."""
        self.api = api_url(api)
        self.gateway = gateway_url(gateway) if gateway else ""
        self._timeout_s = timeout_s
        self._rpc = _Connections(self.api)
        self._gateway = _Connections(self.gateway) if self.gateway else None

    def _call(
        self,
        command: str,
        params: dict[str, Any] | None = None,
        body: bytes | Sequence[bytes] | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
        length: int | None = None,
    ) -> bytes:
        """The reply's body. `body` may be pieces sent one after the other; then `length`
        is their total size."""
        timeout = self._timeout_s if timeout_s is None else timeout_s + _SLACK_S
        path = f"/api/v0/{command}" + (f"?{urlencode(params)}" if params else "")
        headers = {"Content-Type": content_type} if content_type else {}
        if length is not None:
            headers["Content-Length"] = str(length)
        status, data, _ = self._rpc.send("POST", path, command, timeout, body=body, headers=headers)
        if status != 200:
            raise KuboError(f"{command}: HTTP {status}: {_message(data)}")
        return data

    def _json(self, command: str, **kwargs: Any) -> Any:
        body = self._call(command, **kwargs)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise KuboError(f"{command}: reply is not JSON: {body[:120]!r}") from exc

    def id(self) -> dict[str, Any]:
        """The node's identity: ID (peer id), Addresses (multiaddrs), AgentVersion, ..."""
        return self._json("id")

    def block_put(self, data: bytes, pin: bool = True) -> str:
        """Store `data` as one raw block (sha2-256); returns its CIDv1."""
        return self.block_put_many([data], pin)[0]

    def block_put_many(self, blocks: Sequence[bytes], pin: bool = True) -> list[str]:
        """Store each of `blocks` as one raw block (sha2-256) in a single request: Kubo's
        block/put takes many files in one multipart body and answers one JSON line per
        block, in order. Returns their CIDv1s, in order. The body is sent piece by piece
        from the blocks' own bytes (no joined copy). One request instead of one per block:
        98 blocks of 742 KB cost Kubo ~25% less CPU, and the caller one round trip."""
        if not blocks:
            return []
        params = {"cid-codec": "raw", "mhtype": "sha2-256", "pin": str(pin).lower()}
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="block"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body: list[bytes] = []
        for data in blocks:
            body += [head, data, b"\r\n"]
        body.append(f"--{boundary}--\r\n".encode())
        reply = self._call(
            "block/put",
            params=params,
            body=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            length=sum(len(piece) for piece in body),
        )
        keys = [_key(line) for line in reply.splitlines() if line.strip()]
        if len(keys) != len(blocks):
            raise KuboError(f"block/put: {len(keys)} keys for {len(blocks)} blocks")
        return keys

    def block_get(self, cid: str, timeout_s: float) -> bytes:
        """The block's bytes, from the local store or the network (bitswap), within
        `timeout_s` seconds."""
        if self._gateway is None:
            params = {"arg": cid, "timeout": f"{timeout_s:g}s"}
            return self._call("block/get", params=params, timeout_s=timeout_s)
        if not _CID.fullmatch(cid):
            raise KuboError(f"block get: {cid!r} is not a CID")
        status, data, reply = self._gateway.send(
            "GET", f"/ipfs/{cid}", "block get (gateway)", timeout_s, headers=_RAW
        )
        if status != 200:
            raise KuboError(f"block get (gateway): HTTP {status}: {_message(data)}")
        kind = reply.getheader("Content-Type", "")
        if not kind.startswith(_RAW["Accept"]):
            raise KuboError(f"block get (gateway): {kind!r} reply, not a raw block")
        return data

    def pin_add(self, cid: str) -> None:
        self._call("pin/add", params={"arg": cid})

    def pins(self) -> set[str]:
        """The CIDs pinned recursively (block_put's pins and pin_add's)."""
        reply = self._json("pin/ls", params={"type": "recursive"})
        keys = reply.get("Keys") if isinstance(reply, dict) else None
        if not isinstance(keys, dict):
            raise KuboError(f"pin/ls: unexpected reply {str(reply)[:120]!r}")
        return set(keys)

    def pin_rm(self, cid: str) -> None:
        self._call("pin/rm", params={"arg": cid})

    def repo_gc(self) -> None:
        """Remove unpinned blocks from the local store."""
        self._call("repo/gc", params={"quiet": "true"})

    def swarm_connect(self, addr: str, timeout_s: float = 10.0) -> None:
        """Connect to a peer by multiaddr (ending in /p2p/<peer id>)."""
        self._call(
            "swarm/connect", params={"arg": addr, "timeout": f"{timeout_s:g}s"}, timeout_s=timeout_s
        )

    def close(self) -> None:
        self._rpc.close()
        if self._gateway is not None:
            self._gateway.close()


def gateway_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.startswith((UNIX, "/unix/")):
        return _socket_url(url)
    if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname:
        raise ValueError(f"Kubo gateway must be http(s)://host:port, got {url!r}")
    return url


def _socket_url(addr: str) -> str:
    """unix:/path from unix:/path or a /unix/path multiaddr (what Kubo's api file holds)."""
    path = addr.removeprefix(UNIX).removeprefix("//") if addr.startswith(UNIX) else addr[5:]
    if not path.startswith("/"):
        raise ValueError(f"a Kubo socket must be an absolute path, got {addr!r}")
    return UNIX + path


def api_url(api: str) -> str:
    api = api.strip().rstrip("/")
    if api.startswith((UNIX, "/unix/")):
        return _socket_url(api)
    if api.startswith("/"):
        parts = api.split("/")
        # /ip4/<host>/tcp/<port>[/http] or /dns4/<host>/tcp/<port>
        if len(parts) >= 5 and parts[1] in ("ip4", "dns", "dns4") and parts[3] == "tcp":
            return f"http://{parts[2]}:{parts[4]}"
        if len(parts) >= 5 and parts[1] == "ip6" and parts[3] == "tcp":
            return f"http://[{parts[2]}]:{parts[4]}"
        raise ValueError(f"unsupported Kubo API multiaddr {api!r}")
    if not api.startswith(("http://", "https://")):
        raise ValueError(f"Kubo API must be http(s)://host:port or a multiaddr, got {api!r}")
    return api


def _key(line: bytes) -> str:
    """The CID in one of block/put's JSON lines."""
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise KuboError(f"block/put: reply is not JSON: {line[:120]!r}") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("Key"), str):
        raise KuboError(f"block/put: unexpected reply {reply!r}")
    return reply["Key"]


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "Message" in doc:
            return str(doc["Message"])
    except ValueError:
        pass
    return body[:200].decode(errors="replace")
