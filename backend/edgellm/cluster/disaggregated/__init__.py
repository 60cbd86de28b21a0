"""Prefill/decode disaggregation: the prompt on peer P, the decode on peer D, the KV cache
handed over as IPFS blocks.

A P/D plan (plan.py) has two stages, each holding every layer. For one request:

1. P computes the whole prompt (`StageActor.prefill`) and returns the last position's
   logits: the first token is sampled from exactly the math a single process does.
2. P encodes the prompt's full blocks (canonical bytes, so their CIDs are computed
   locally, as Kubo would name them) and builds their manifest, naming its IPFS
   addresses as providers (`StageActor.handoff`, `PeerKV.store_prompt`); P's session is
   freed then. The blocks' bytes go into P's Ray object store and the Handoff carries a
   reference to them (up to DIRECT_MAX_BYTES; a longer prompt's go through IPFS only);
   P stores the blocks in its own Kubo in the background, for the swarm's cache and a
   failover's new decode peer, and the cluster's end waits (bounded) for that store.
3. D takes the bytes from P's object store (Ray moves them node to node) and checks each
   against its CID in the manifest, then against the request (handoff.fetch_blocks:
   model CID, layers, dtype, shape, position, token ids, chained key), and imports the
   leading good ones; parts it did not get directly it fetches by CID through its Kubo,
   connected to P's (bitswap). It computes the rest of the prompt itself: the tail that
   fills no whole block, and everything from the first block that is missing or
   refused, with a warning (`StageActor.load_kv`, `PeerKV.load`). Taking the bytes
   straight from P, not through two Kubos, cut the handoff's share of a 1,568-token
   prefill from about 0.28 to the figure bench/pipeline_figures.py reports as
   pd_handoff_share.
4. Every later token runs on D only.

The driver submits 1-3 back to back: D's load takes P's handoff as a Ray object reference,
so the manifest goes P -> D without a round-trip through the driver, and the handoff
overlaps sampling and streaming the first token (time to first token is P's prefill). The
driver sees each Handoff, but only a reference to the bytes, which it drops before
keeping the handoff for a failover (handoffs.py).

Nothing about IPFS fails a request: with no Kubo on P or D, a Kubo that does not answer,
or blocks that do not check out, D computes that part of the prompt and says so. A
prefill peer lost before its handoff arrived costs nothing but time either: D computes the
prompt (for the first token too, if P was lost before its logits came back or before the
request reached it). A decode peer lost is a ClusterError like any stage's loss (the node
decides about failover). The node's failover replays the request, with the tokens
generated so far, on a new plan whose decode peer is another; that peer starts from the
lost request's handoff (the cluster session keeps its recent ones, `handoffs.py`): it
fetches the prompt's blocks from P's Kubo and computes the generated tokens on top, and
P computes nothing. If the blocks cannot be had it computes everything, with a warning.

Warnings raised on P and D travel back with the results (Ray actors' logs do not reach
the requester) and are logged by the requester's backend.

Modules, by where they run:

- `messages.py`: what travels between P, D and the driver (`Handoff`, `Loaded`);
- `handoffs.py`: a cluster session's recent handoffs, for a failover's new decode peer;
- `worker.py`: the stage actors' side, on P and D (`PeerKV`: a peer's block store and
  the store/fetch halves of the handoff; `edgellm.cluster.actor.StageActor` calls it);
- `driver.py`: the requester's side (`DisaggregatedRunner`, the StageRunner that submits
  the calls above and falls back when P is lost).
"""
