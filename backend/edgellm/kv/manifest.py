"""The KV manifest: which CIDs hold which block keys (the request's `kv_manifest` bytes).

    {
      "format": "edgellm-kv-manifest/1",
      "model_cid": "bafk...",           # weights CID; the keys are only valid for it
      "dtype": "float32",
      "block_size": 16,
      "providers": ["/ip4/10.0.0.2/tcp/4001/p2p/12D3Koo..."],   # optional, IPFS peers
      "blocks": [
        {"key": "<h_i hex>", "position": 0,
         "parts": [{"layer_start": 0, "layer_end": 30, "cid": "bafkrei...", "size": 737800}]}
      ]
    }

A block's parts are layer groups (block.py); a peer serving a layer range needs parts that
cover it. Parsing checks the shape of the document only: what the CIDs hold is checked when
each block is fetched (block.decode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgellm.errors import ManifestRefused

MANIFEST_FORMAT = "edgellm-kv-manifest/1"
MAX_MANIFEST_BYTES = 8 << 20
# Providers a manifest may name: each is dialled before the fetch (all of them within one
# deadline), so a long list of unroutable addresses would stall the request. The
# requester's node puts in only its holders' record addresses, at most 8 per holder.
MAX_PROVIDERS = 64


@dataclass(frozen=True)
class PartRef:
    layer_start: int
    layer_end: int
    cid: str
    size: int = 0


@dataclass(frozen=True)
class BlockRef:
    key: bytes
    position: int
    parts: tuple[PartRef, ...]


@dataclass(frozen=True)
class KVManifest:
    model_cid: str
    dtype: str
    block_size: int
    blocks: tuple[BlockRef, ...]
    providers: tuple[str, ...] = ()
    _by_key: dict[bytes, BlockRef] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update((b.key, b) for b in self.blocks)

    def parts(self, key: bytes) -> tuple[PartRef, ...]:
        block = self._by_key.get(key)
        return block.parts if block is not None else ()

    def to_json(self) -> bytes:
        doc = {
            "format": MANIFEST_FORMAT,
            "model_cid": self.model_cid,
            "dtype": self.dtype,
            "block_size": self.block_size,
            "providers": list(self.providers),
            "blocks": [
                {
                    "key": b.key.hex(),
                    "position": b.position,
                    "parts": [
                        {
                            "layer_start": p.layer_start,
                            "layer_end": p.layer_end,
                            "cid": p.cid,
                            "size": p.size,
                        }
                        for p in b.parts
                    ],
                }
                for b in self.blocks
            ],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KVManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestRefused(f"manifest is {len(data)} bytes, over {MAX_MANIFEST_BYTES}")
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
                raise ManifestRefused(f"format is not {MANIFEST_FORMAT!r}")
            blocks = tuple(_block(b) for b in doc["blocks"])
            providers = tuple(_text(p, "provider") for p in doc.get("providers") or ())
            if len(providers) > MAX_PROVIDERS:
                raise ManifestRefused(f"{len(providers)} providers, over {MAX_PROVIDERS}")
            return cls(
                model_cid=_text(doc["model_cid"], "model_cid"),
                dtype=_text(doc["dtype"], "dtype"),
                block_size=_count(doc["block_size"], "block_size", minimum=1),
                blocks=blocks,
                providers=providers,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestRefused(f"bad manifest: {exc!r}") from exc


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ManifestRefused(f"{what} must be a non-empty string")
    return value


def _count(value, what: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ManifestRefused(f"{what} must be an integer >= {minimum}")
    return value


def _block(doc: dict) -> BlockRef:
    key = bytes.fromhex(_text(doc["key"], "key"))
    if len(key) != 32:
        raise ManifestRefused("key must be 32 bytes of hex")
    parts = []
    for p in doc["parts"]:
        start = _count(p["layer_start"], "layer_start")
        end = _count(p["layer_end"], "layer_end", minimum=start + 1)
        parts.append(PartRef(start, end, _text(p["cid"], "cid"), _count(p.get("size", 0), "size")))
    return BlockRef(key, _count(doc["position"], "position"), tuple(parts))
