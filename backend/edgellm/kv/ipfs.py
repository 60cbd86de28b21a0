"""A small client for Kubo's HTTP RPC API (POST /api/v0/<command>).

The `ipfshttpclient` package refuses every Kubo release since 0.8 (a version gate in an
unmaintained package), so the backend speaks the RPC API itself over httpx. Only what KV
blocks need: id, block/put (raw codec, sha2-256, pinned), block/get (with a timeout),
pin/add, pin/rm, repo/gc and swarm/connect. Every failure (connection refused, HTTP
error, Kubo's error body, a timeout) raises IpfsError.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

# Extra seconds the HTTP client waits beyond Kubo's own `timeout` option.
_SLACK_S = 2.0


class IpfsError(Exception):
    """Kubo could not be reached or refused the call."""


class KuboClient:
    def __init__(self, api: str, timeout_s: float = 30.0) -> None:
        """`api` is a base URL, e.g. "http://127.0.0.1:5001", or a Kubo multiaddr such as
        "/ip4/127.0.0.1/tcp/5001" (the form Kubo writes to $IPFS_PATH/api)."""
        self.api = api_url(api)
        self._timeout_s = timeout_s
        self._http = httpx.Client(base_url=self.api + "/api/v0", timeout=timeout_s)

    def _call(
        self,
        command: str,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        timeout = self._timeout_s if timeout_s is None else timeout_s + _SLACK_S
        try:
            reply = self._http.post(f"/{command}", params=params, files=files, timeout=timeout)
        except httpx.HTTPError as exc:
            raise IpfsError(f"{command}: {type(exc).__name__}: {exc}") from exc
        if reply.status_code != 200:
            raise IpfsError(f"{command}: HTTP {reply.status_code}: {_message(reply.content)}")
        return reply.content

    def _json(self, command: str, **kwargs: Any) -> Any:
        body = self._call(command, **kwargs)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise IpfsError(f"{command}: reply is not JSON: {body[:120]!r}") from exc

    def id(self) -> dict[str, Any]:
        """The node's identity: ID (peer id), Addresses (multiaddrs), AgentVersion, ..."""
        return self._json("id")

    def block_put(self, data: bytes, pin: bool = True) -> str:
        """Store `data` as one raw block (sha2-256); returns its CIDv1."""
        params = {"cid-codec": "raw", "mhtype": "sha2-256", "pin": str(pin).lower()}
        reply = self._json("block/put", params=params, files={"file": ("block", data)})
        if not isinstance(reply, dict) or not isinstance(reply.get("Key"), str):
            raise IpfsError(f"block/put: unexpected reply {reply!r}")
        return reply["Key"]

    def block_get(self, cid: str, timeout_s: float) -> bytes:
        """The block's bytes, from the local store or the network (bitswap), within
        `timeout_s` seconds."""
        params = {"arg": cid, "timeout": f"{timeout_s:g}s"}
        return self._call("block/get", params=params, timeout_s=timeout_s)

    def pin_add(self, cid: str) -> None:
        self._call("pin/add", params={"arg": cid})

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
        self._http.close()


def api_url(api: str) -> str:
    api = api.strip().rstrip("/")
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


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "Message" in doc:
            return str(doc["Message"])
    except ValueError:
        pass
    return body[:200].decode(errors="replace")
