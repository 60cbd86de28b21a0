package planner

import (
	"fmt"
	"slices"
)

// Choose plans req over peers: the chain of stages with the best rank under
// the cost model (see the package doc), or an error wrapping one of the
// package's sentinels with the reason in numbers. It is pure: the same
// inputs always give the same plan.
func Choose(peers []Peer, req Request) (Plan, error) {
	if err := req.validate(); err != nil {
		return Plan{}, err
	}
	if err := validatePeers(peers); err != nil {
		return Plan{}, err
	}
	gs := groups(peers, req)
	if len(gs) == 0 {
		return Plan{}, notServed(peers, req)
	}
	var (
		best     *chain
		bestPlan Plan
		firstErr error
	)
	for _, g := range gs { // largest group first: its error is the one reported
		ch, cs, err := g.plan(req)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if best == nil || ch.rank < best.rank || (ch.rank == best.rank && len(ch.order) < len(best.order)) {
			best, bestPlan = ch, g.toPlan(ch, cs)
		}
	}
	if best == nil {
		return Plan{}, firstErr
	}
	return bestPlan, nil
}

// plan searches one weights group.
func (g *group) plan(req Request) (*chain, []cand, error) {
	cs, err := g.eligible(req)
	if err != nil {
		return nil, nil, err
	}
	s := &searcher{cs: cs, n: g.numLayers, limit: req.MaxTokenLatency}
	s.run(req.Stages)
	if s.best != nil {
		return s.best, cs, nil
	}
	name := g.name(req)
	switch {
	case s.fastest > 0:
		return nil, nil, fmt.Errorf("%w: the fastest plan for %s needs %v per token, the limit is %v",
			ErrLatencyLimit, name, s.fastest, req.MaxTokenLatency)
	case req.Stages == 1:
		return nil, nil, fmt.Errorf("%w: no single peer can hold all of %s (%s with overhead)",
			ErrInsufficientMemory, name, fmtBytes(stageBytes(g.weightsBytes, g.numLayers, g.numLayers)))
	case req.Stages > 1 && topCaps(cs, req.Stages) < g.numLayers:
		return nil, nil, fmt.Errorf("%w: the %d peers with the most free memory hold only %d of the %d layers of %s",
			ErrInsufficientMemory, req.Stages, topCaps(cs, req.Stages), g.numLayers, name)
	case req.Stages > 1:
		return nil, nil, fmt.Errorf("%w: no %d of the %d eligible peers can hold the %d layers of %s between them",
			ErrNoChain, req.Stages, len(cs), g.numLayers, name)
	}
	return nil, nil, fmt.Errorf("%w: no chain of the %d eligible peers can hold the %d layers of %s",
		ErrNoChain, len(cs), g.numLayers, name)
}

// toPlan turns the winning chain into the exported plan.
func (g *group) toPlan(ch *chain, cs []cand) Plan {
	p := Plan{
		Model: g.modelID, WeightsCID: g.cid, NumLayers: g.numLayers, WeightsBytes: g.weightsBytes,
		ExpectedTokenLatency: ch.latency(), NetworkLatency: ch.network, ComputeLatency: ch.compute,
		LoadTime: ch.load,
	}
	for i, ci := range ch.order {
		c := &cs[ci]
		st := Stage{PeerID: c.id, Start: ch.bounds[i], End: ch.bounds[i+1], RTT: c.rtt,
			LAN: c.lan, Requester: c.requester, LoadTime: c.loadTime}
		st.MemoryBytes = stageBytes(g.weightsBytes, st.Layers(), g.numLayers)
		st.Compute = computeTime(st.Layers(), g.numLayers, c.speed)
		st.Price = stagePrice(c.price, st.Layers(), g.numLayers)
		p.PricePer1kMicros = addSat(p.PricePer1kMicros, st.Price)
		p.Stages = append(p.Stages, st)
	}
	return p
}

// notServed explains why no peer serves the request's model.
func notServed(peers []Peer, req Request) error {
	name := (&group{}).name(req)
	unknown := 0
	for _, p := range peers {
		for _, m := range p.Models {
			if m.NumLayers <= 0 && matches(Model{ID: m.ID, WeightsCID: m.WeightsCID, NumLayers: 1}, req) {
				unknown++
				break
			}
		}
	}
	if unknown > 0 {
		return fmt.Errorf("%w: no peer in the swarm serves %s with a known layer count (%d list it without one)",
			ErrNoProvider, name, unknown)
	}
	return fmt.Errorf("%w: no peer in the swarm serves %s", ErrNoProvider, name)
}

// topCaps is how many layers the memory of the k roomiest candidates holds.
func topCaps(cs []cand, k int) int {
	caps := make([]int, len(cs))
	for i, c := range cs {
		caps[i] = c.memCap
	}
	slices.Sort(caps)
	total := 0
	for _, c := range caps[max(len(caps)-k, 0):] {
		total += c
	}
	return total
}
