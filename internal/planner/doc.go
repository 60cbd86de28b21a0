// Package planner chooses which peers run a model and which layers each one
// holds: step 2 ("Plan") of the request path in docs/architecture.md. It is
// a pure function of its inputs — capability records turned into Peer
// values (by p2p.PlannerPeer: the planner imports nothing of the network and
// links no libp2p), measured RTTs, and the request's limits — with no I/O
// and no clock, so it is tested with plain structs.
//
// # Cost model
//
// A plan is an ordered chain of stages s1..sN; stage i runs the contiguous
// layers [Start, End) on one peer. One decode step sends activations
// requester → s1 → … → sN → requester. Its expected latency is
//
//	latency = Σ RTT(si) + Σ compute(si)
//
// Network: only RTTs from the requester are measured, so a hop between two
// stages is estimated as the half-sum of their RTTs, and the first and last
// hops as half an RTT each. The sum telescopes to Σ RTT(si): every stage
// costs its own round trip, whatever its position. A peer's RTT of 0 means
// "not measured" and costs UnmeasuredRTT; the requester itself costs 0.
//
// Compute: a record's decode speed is for the whole model on that peer, so a
// stage of n out of L layers costs n / (L · DecodeTokensPerS) seconds. A
// speed of 0 (not measured yet) counts as UnmeasuredDecodeTokensPerS.
//
// Memory: a stage of n layers needs WeightsBytes · n / L plus
// MemoryOverheadPercent for KV cache and activations, and that must fit in
// the peer's MemoryFreeBytes. A weights size of 0 (unknown) skips the check.
//
// Ranking: plans are compared by latency plus WANPenalty per stage on a peer
// that is neither on the LAN nor the requester — a small, documented bias
// towards LAN peers, whose RTTs are also steadier — then by fewer stages,
// then by the canonical peer order below, so the choice is deterministic.
// Plan.ExpectedTokenLatency is the latency without the penalty, and it is
// what Request.MaxTokenLatency is checked against.
//
// KV-aware routing: Request.Prefer gives peers that hold the prompt's cached
// KV prefix a bonus, subtracted from the rank of each chain with a stage on
// them (PrefixBonus turns the prefill time they save into per-token terms),
// so among otherwise close plans the one starting where the cache is wins.
//
// Loading: a worker serving several models loads them on demand within a
// memory budget, so a record may list a model as unloaded, with the time its
// last load took there (else EstimatedLoadTime from the weights' size). A
// plan's stages load at once, so the plan waits for the slowest
// (Plan.LoadTime); its rank adds that wait spread over Request.AnswerTokens
// (at least 1), so a peer with the model loaded wins unless the other is
// faster per token by more than the load costs over the answer. The
// expected latency, and the MaxTokenLatency check, are per token and
// unaffected. ChooseMode counts the load once per request.
//
// Prefill/decode: ChooseMode (mode.go) prices the whole request — prefill
// time, the KV handoff, the answer's tokens — for Choose's one-peer plan and
// for every prefill/decode pair, and picks P/D when it is clearly faster.
//
// # Choosing
//
// Peers are filtered first: those serving the model (same weights CID and
// layer count; a pinned Request.WeightsCID narrows it), not busy
// (ActiveSessions < MaxSessions, 0 counting as 1), trusted if asked, and
// asking at most the price limit. The requester is exempt from the trust and
// price filters: it does not pay or distrust itself.
//
// Auto (Request.Stages 0): if one peer can hold the whole model within the
// limits, the plan is the best single peer — one peer needs no Ray cluster,
// no multi-peer negotiation and has one point of failure, costs the latency
// model does not price. Otherwise, and for a fixed stage count, the layers
// are split across peers: each subset of candidates gets shares in
// proportion to decode speed, capped by what memory and layer ranges allow
// (water-filling), rounded to whole layers by largest remainder with at
// least one layer per stage; the chain with the best rank wins.
//
// Search: with at most ExactMaxPeers candidates every subset is tried, and
// for peers that advertise only part of the model every order of the subset
// too (exact; tests compare it with brute force over every ordered chain).
// With more, the heuristic ranks candidates by an amortised per-layer cost
// (RTT spread over the layers the peer would hold, plus its compute per
// layer), keeps the best ExactMaxPeers (or Stages+2), widens that pool until
// it covers every layer and the model's size, searches the pool's subsets,
// then hill-climbs: swap one peer of the best chain for any outside it, or
// (auto) add or drop one, while that improves the rank. Large subsets of
// partial-range peers get a single order, found by walking the layers.
//
// Order: under the half-sum estimate the order does not change the latency,
// so the planner orders stages to keep the real hops short: the requester
// first, then LAN peers by RTT, then the other peers grouped by region
// (regions by their nearest peer), by RTT within a region. Grouping means
// the chain enters and leaves each remote region once instead of crossing
// the WAN back and forth. Peers that hold only part of the model are placed
// wherever their ranges allow.
package planner
