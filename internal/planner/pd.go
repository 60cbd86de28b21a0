package planner

import "fmt"

// ChoosePD plans a prefill/decode disaggregated run: the prompt on peer
// prefill, the decode on peer decode, continuing from the prefill peer's KV
// blocks (the backend hands them over; see docs/architecture.md, "KV blocks
// over IPFS").
//
// Decisions:
//   - The plan is two stages, both [0, n): prefill then decode. Each role
//     runs every layer, so each named peer must be able to hold the whole
//     model alone: it is checked as a one-stage plan on that peer only
//     (model served, memory, session limit, price and latency limits), and
//     a refusal names the role and the peer and wraps the reason
//     (ErrNoProvider, ErrBusy, ...). req.Stages above 1 is invalid.
//   - A named peer that is not among peers is ErrUnknownPeer; the two peers
//     must differ and hold the same weights (ErrDifferentWeights).
//   - Per token only the decode peer runs after the first, so the expected
//     latency is the decode stage's RTT plus compute; the price is both
//     stages' prices.
//   - The caller names both peers; ChooseMode (mode.go) is where the
//     planner chooses P/D itself, by calling this for every pair.
func ChoosePD(peers []Peer, req Request, prefill, decode string) (Plan, error) {
	switch {
	case req.Stages > 1:
		return Plan{}, fmt.Errorf("%w: %d stages for a prefill/decode plan (each role runs every layer)", ErrInvalidRequest, req.Stages)
	case prefill == decode:
		return Plan{}, fmt.Errorf("%w: the prefill and decode peers must differ (both %s)", ErrInvalidRequest, prefill)
	}
	req.Stages = 1
	pre, err := chooseRole(peers, req, "prefill", prefill)
	if err != nil {
		return Plan{}, err
	}
	dec, err := chooseRole(peers, req, "decode", decode)
	if err != nil {
		return Plan{}, err
	}
	if pre.WeightsCID != dec.WeightsCID {
		return Plan{}, fmt.Errorf("%w for %s (%s, %s)", ErrDifferentWeights, req.Model, pre.WeightsCID, dec.WeightsCID)
	}
	out := pre
	p, d := pre.Stages[0], dec.Stages[0]
	out.Stages = []Stage{p, d}
	out.ExpectedTokenLatency, out.NetworkLatency, out.ComputeLatency = d.RTT+d.Compute, d.RTT, d.Compute
	out.PricePer1kMicros = p.Price + d.Price
	out.LoadTime = max(p.LoadTime, d.LoadTime)
	return out, nil
}

// chooseRole is the one-stage plan of req on the peer with id alone.
func chooseRole(peers []Peer, req Request, role, id string) (Plan, error) {
	var found []Peer
	for _, p := range peers {
		if p.ID == id {
			found = append(found, p)
		}
	}
	if len(found) == 0 {
		return Plan{}, fmt.Errorf("%w: %s peer %s is not among the %d peers", ErrUnknownPeer, role, id, len(peers))
	}
	plan, err := Choose(found, req)
	if err != nil {
		return Plan{}, fmt.Errorf("%s peer %s cannot run %s: %w", role, id, req.Model, err)
	}
	return plan, nil
}
