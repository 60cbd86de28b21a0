package planner

import (
	"math"
	"time"
)

// ChooseMode decides between the plan Choose makes and a prefill/decode
// (P/D) plan, by the expected latency of the whole request.
//
// Decisions:
//   - The arithmetic is the chain cost model's, over the whole request
//     instead of one token: a one-peer plan on X costs prefill(X) +
//     answer · token(X); a P/D plan costs prefill(P) + handoff +
//     answer · token(D), where token is the plan's expected per-token
//     latency (RTT + compute), prefill(X) = prompt / X's prefill speed
//     shared with the sessions X already runs (ActiveSessions), and the
//     handoff is HandoffPerToken per prompt token. P/D pays for a long
//     prompt when a faster prefill peer exists or the best decoder is busy.
//   - P/D is considered only when Choose's plan is one peer (auto or
//     Stages 1): both P/D roles hold every layer, and a split chain already
//     spreads the prompt's compute.
//   - The bar is the cheapest one-peer plan over the whole request, not
//     only Choose's (which ranks by per-token latency): a fast prefill
//     peer far away may answer alone sooner than handing its prompt over.
//     When P/D loses, Choose's plan stays (ChooseMode picks the mode, not
//     another one-peer plan).
//   - It must win by PDMinGain, so near-ties keep the simpler plan, and
//     only for prompts of at least MinPDPromptTokens (below, a second
//     cluster member and the IPFS connection cost more than they save).
//   - Limits hold as in ChoosePD (each role a valid one-peer plan).
//
// The bool reports a P/D plan (stages: prefill, then decode).
func ChooseMode(peers []Peer, req Request, shape Shape) (Plan, bool, error) {
	plain, err := Choose(peers, req)
	if err != nil || len(plain.Stages) != 1 || shape.PromptTokens < MinPDPromptTokens {
		return plain, false, err
	}
	best, bestCost, isPD := plain, soloCost(peers, req, shape, plain), false
	limit := time.Duration(float64(bestCost) * (1 - PDMinGain))
	for _, pre := range peers {
		for _, dec := range peers {
			if pre.ID == dec.ID || pre.Requester || dec.Requester {
				continue
			}
			pd, err := ChoosePD(peers, req, pre.ID, dec.ID)
			if err != nil {
				continue
			}
			handoff := time.Duration(shape.PromptTokens) * HandoffPerToken
			if cost := requestCost(shape, pre, pd.ExpectedTokenLatency, handoff) + pd.LoadTime; cost < limit && cost < bestCost {
				best, bestCost, isPD = pd, cost, true
			}
		}
	}
	return best, isPD, nil
}

// Shape is what ChooseMode knows of the request's work.
type Shape struct {
	PromptTokens int
	// CachedTokens of the prompt the one-peer plan takes from the swarm's
	// cache instead of computing (a P/D prefill computes the whole prompt).
	CachedTokens int
	AnswerTokens int // expected; at least 1 counts
}

const (
	// HandoffPerToken is the cost of handing one prompt token's KV from
	// the prefill peer to the decode peer (store as IPFS blocks, fetch over
	// bitswap, verify): 502 ms + 369 ms for a 688-token prompt, two cores.
	HandoffPerToken = 1300 * time.Microsecond
	// MinPDPromptTokens is the shortest prompt P/D is considered for.
	MinPDPromptTokens = 256
	// PDMinGain is how much lower a P/D plan's expected latency must be.
	PDMinGain = 0.10
)

// soloCost is the expected latency of the whole request on the cheapest
// one-peer plan (its load wait included): plain's peer or any other that can run it alone, each
// computing the prompt less the cached tokens when it holds them (plain's
// peer, or a peer req.Prefer ranks up for holding them).
func soloCost(peers []Peer, req Request, shape Shape, plain Plan) time.Duration {
	cached := shape
	cached.PromptTokens -= min(max(shape.CachedTokens, 0), shape.PromptTokens)
	best := time.Duration(math.MaxInt64)
	for _, x := range peers {
		alone := req
		alone.Stages = 1
		one, err := chooseRole(peers, alone, "one-peer", x.ID)
		if err != nil {
			continue
		}
		s := shape
		if x.ID == plain.Stages[0].PeerID || req.Prefer[x.ID] > 0 {
			s = cached
		}
		best = min(best, requestCost(s, x, one.ExpectedTokenLatency, 0)+one.LoadTime)
	}
	return best
}

// requestCost is prefill on prefill (shared with its sessions) + handoff +
// answer tokens at token latency.
func requestCost(shape Shape, prefill Peer, token, handoff time.Duration) time.Duration {
	speed := effectiveSpeed(prefill.PrefillTokensPerS) / float64(1+max(prefill.ActiveSessions, 0))
	sec := float64(shape.PromptTokens) / speed
	if math.IsNaN(sec) || math.IsInf(sec, 0) {
		sec = 0
	}
	return time.Duration(sec*float64(time.Second)) + handoff + time.Duration(max(shape.AnswerTokens, 1))*token
}
