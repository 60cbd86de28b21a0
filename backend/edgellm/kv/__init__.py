"""KV-cache blocks as IPFS content.

A prompt's KV cache is cut into blocks of `block_size` tokens. Each block has a chained
key (`keys.py`) and is stored, per stage layer range, as one or more self-describing
safetensors files (`block.py`), each an IPFS block under Kubo's 1 MiB limit, put and
fetched through Kubo's HTTP RPC API (`ipfs.py`). A peer keeps an index of the blocks it
holds with a byte cap and LRU eviction (`store.py`); a manifest (`manifest.py`) tells
another peer which CIDs hold which keys. `handoff.py` moves blocks between a stage's cache
and the store (prefill-and-store on one peer, fetch-into-session on another);
`prefix.py` is the engine's prefix cache built on those pieces. A stage's cache is the
`StageCache` protocol (`stage.py`): engines import `kv`, `kv` imports no engine.
"""
