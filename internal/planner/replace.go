package planner

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Replace re-plans after the peers in lost vanished (docs/architecture.md,
// request path step 7, "Survive"): every stage on a surviving peer keeps its peer and
// layers, and each lost stage's layers [Start, End) move, unchanged, to one
// new peer. It is pure, like Choose.
//
// Decisions:
//   - The boundaries stay: the survivors keep what they hold, and the
//     requester re-runs the same chain with one peer swapped. Moving layers
//     between survivors could give a faster chain but costs every survivor a
//     reload mid-answer; a later request plans afresh with Choose anyway.
//   - A new peer must serve the plan's weights (same CID and layer count),
//     not be busy, be trusted if req.TrustedOnly, ask at most
//     req.MaxPricePer1kMicros, hold the range in its memory and inside one of
//     its advertised layer ranges, and be neither lost nor already in the
//     plan. req.Model, WeightsCID and Stages are ignored: the plan fixes them.
//   - Among those, a stage takes the peer with the lowest cost for it (its
//     RTT plus its compute for the range, plus WANPenalty off the LAN), ties
//     broken by the canonical order (see the package doc). Lost stages are
//     filled in pipeline order; a new peer takes one stage at most.
//   - The plan's latency and price are recomputed; the result must still be
//     within req.MaxTokenLatency (ErrLatencyLimit otherwise).
//
// Errors wrap ErrInvalidRequest (lost names no stage of plan, or peers are
// listed twice), ErrNoProvider (no peer can take a lost stage: the message
// names its layers and the lost peer) or ErrLatencyLimit.
func Replace(plan Plan, lost []string, peers []Peer, req Request) (Plan, error) {
	if err := validatePeers(peers); err != nil {
		return Plan{}, err
	}
	if req.MaxTokenLatency < 0 {
		return Plan{}, fmt.Errorf("%w: latency limit %v is negative", ErrInvalidRequest, req.MaxTokenLatency)
	}
	gone := map[string]bool{}
	for _, id := range lost {
		gone[id] = true
	}
	inPlan := map[string]bool{}
	hit := 0
	for _, st := range plan.Stages {
		inPlan[st.PeerID] = true
		if gone[st.PeerID] {
			hit++
		}
	}
	if len(lost) == 0 || hit == 0 {
		return Plan{}, fmt.Errorf("%w: none of the lost peers %v holds a stage of the plan", ErrInvalidRequest, lost)
	}

	req.Model, req.WeightsCID, req.Stages = plan.Model, plan.WeightsCID, 0
	cs, err := replacements(plan, peers, req, func(id string) bool { return !gone[id] && !inPlan[id] })
	if err != nil {
		return Plan{}, err
	}
	out := plan
	out.Stages = slices.Clone(plan.Stages)
	used := map[string]bool{}
	for i, st := range out.Stages {
		if !gone[st.PeerID] {
			continue
		}
		best := -1
		var bestCost time.Duration
		for j := range cs {
			c := &cs[j]
			if used[c.id] || !c.fits(st.Start, st.End) {
				continue
			}
			cost := c.rtt + computeTime(st.Layers(), plan.NumLayers, c.speed)
			if !c.lan {
				cost += WANPenalty
			}
			if best < 0 || cost < bestCost { // cs is in canonical order: the first of equals wins
				best, bestCost = j, cost
			}
		}
		if best < 0 {
			return Plan{}, fmt.Errorf("%w: no other peer can hold layers [%d,%d) of %s, lost with %s (%d candidates)",
				ErrNoProvider, st.Start, st.End, replaceName(plan), st.PeerID, len(cs))
		}
		c := &cs[best]
		used[c.id] = true
		out.Stages[i] = Stage{PeerID: c.id, Start: st.Start, End: st.End, RTT: c.rtt, LAN: c.lan, Requester: c.requester,
			MemoryBytes: stageBytes(plan.WeightsBytes, st.Layers(), plan.NumLayers),
			Compute:     computeTime(st.Layers(), plan.NumLayers, c.speed),
			Price:       stagePrice(c.price, st.Layers(), plan.NumLayers)}
	}
	out.NetworkLatency, out.ComputeLatency, out.PricePer1kMicros = 0, 0, 0
	for _, st := range out.Stages {
		out.NetworkLatency += st.RTT
		out.ComputeLatency += st.Compute
		out.PricePer1kMicros = addSat(out.PricePer1kMicros, st.Price)
	}
	out.ExpectedTokenLatency = out.NetworkLatency + out.ComputeLatency
	if req.MaxTokenLatency > 0 && out.ExpectedTokenLatency > req.MaxTokenLatency {
		return Plan{}, fmt.Errorf("%w: with the lost stages replaced %s needs %v per token, the limit is %v",
			ErrLatencyLimit, replaceName(plan), out.ExpectedTokenLatency, req.MaxTokenLatency)
	}
	return out, nil
}

// replacements are the candidates, in canonical order, that may take a lost
// stage: members of the plan's weights group that pass the request's filters
// and ok. None is not an error here (the caller names the stage).
func replacements(plan Plan, peers []Peer, req Request, ok func(id string) bool) ([]cand, error) {
	var g *group
	for _, x := range groups(peers, req) {
		if x.cid == plan.WeightsCID && x.numLayers == plan.NumLayers {
			g = x
			break
		}
	}
	if g == nil {
		return nil, nil
	}
	g.weightsBytes = plan.WeightsBytes // the plan's size is what its stages were checked against
	g.members = slices.DeleteFunc(g.members, func(m member) bool { return !ok(m.peer.ID) })
	if len(g.members) == 0 {
		return nil, nil
	}
	ms, err := g.filter(req, replaceName(plan))
	if err != nil {
		return nil, fmt.Errorf("no peer can take the lost stages: %w", err)
	}
	cs := make([]cand, len(ms))
	for i, m := range ms {
		cs[i] = g.newCand(m)
	}
	sortCanonical(cs)
	return cs, nil
}

func replaceName(p Plan) string {
	var b strings.Builder
	b.WriteString(p.Model)
	if p.WeightsCID != "" {
		fmt.Fprintf(&b, " (weights %s)", p.WeightsCID)
	}
	return b.String()
}
