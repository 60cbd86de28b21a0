"""Forged KV blocks for the spot-check tests: well-formed, finite K/V that are not what the
model computes, so only recomputing a position (edgellm.kv.spot) can tell."""

from __future__ import annotations

import torch

from edgellm.kv import block as blockfmt
from edgellm.kv.ipfs import KuboClient

# The embedded model's K/V shape per layer and block: [kv_heads, block, head_dim].
KV_HEADS, HEAD_DIM = 3, 64


def forge_parts(client: KuboClient, manifest: dict, block_size: int) -> set[str]:
    """Replace every part of a parsed manifest by a block with the same metadata and K/V
    all 0.25, stored through `client` (the holder's Kubo); the forged CIDs."""
    forged = set()
    for block in manifest["blocks"]:
        for part in block["parts"]:
            meta, _ = blockfmt.read_meta(client.block_get(part["cid"], 10.0))
            shape = (KV_HEADS, block_size, HEAD_DIM)
            layers = [
                (torch.full(shape, 0.25), torch.full(shape, 0.25))
                for _ in range(meta.layer_end - meta.layer_start)
            ]
            part["cid"] = client.block_put(blockfmt.encode(meta, layers))
            forged.add(part["cid"])
    return forged
