"""Prefill/decode disaggregation: the prompt on peer P, the decode on peer D, the KV cache
handed over as IPFS blocks.

A P/D plan (plan.py) has two stages, each holding every layer. For one request:

1. P computes the whole prompt (`StageActor.prefill`) and returns the last position's
   logits: the first token is sampled from exactly the math a single process does.
2. P stores the prompt's full blocks in its own Kubo and builds their manifest, naming its
   IPFS addresses as providers (`StageActor.handoff`, `PeerKV.store_prompt`); P's session
   is freed then.
3. D connects its Kubo to P's, fetches the blocks by CID (bitswap), checks each against
   the request (handoff.fetch_blocks: model CID, layers, dtype, shape, position, token
   ids, chained key) and imports the leading good ones; it computes the rest of the prompt
   itself: the tail that fills no whole block, and everything from the first block that
   is missing or refused, with a warning (`StageActor.load_kv`, `PeerKV.load`).
4. Every later token runs on D only.

The driver submits 1-3 back to back: D's load takes P's handoff as a Ray object reference,
so the manifest goes P -> D without a round-trip through the driver, and the handoff
overlaps sampling and streaming the first token (time to first token is P's prefill).

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
