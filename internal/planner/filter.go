package planner

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// eligible filters the group's members by the request's limits and returns
// the candidates in canonical order (see the package doc), or why there are
// none that could hold the model.
func (g *group) eligible(req Request) ([]cand, error) {
	name := g.name(req)
	if err := g.checkStages(req, name); err != nil {
		return nil, err
	}
	ms, err := g.filter(req, name)
	if err != nil {
		return nil, err
	}
	cs := make([]cand, len(ms))
	for i, m := range ms {
		cs[i] = g.newCand(m)
		cs[i].bonus = req.Prefer[cs[i].id]
		cs[i].load = loadPenalty(cs[i].loadTime, req.AnswerTokens)
	}
	sortCanonical(cs)
	if req.Stages > len(cs) {
		return nil, fmt.Errorf("%w: --stages %d but only %d of the %d peers serving %s are within the limits",
			ErrTooManyStages, req.Stages, len(cs), len(g.members), name)
	}
	return cs, g.checkCapacity(cs, name)
}

func (g *group) name(req Request) string {
	if req.WeightsCID != "" {
		return fmt.Sprintf("%s (weights %s)", req.Model, req.WeightsCID)
	}
	return req.Model
}

func (g *group) checkStages(req Request, name string) error {
	if req.Stages > len(g.members) {
		return fmt.Errorf("%w: --stages %d but only %d peers serve %s",
			ErrTooManyStages, req.Stages, len(g.members), name)
	}
	if req.Stages > g.numLayers {
		return fmt.Errorf("%w: --stages %d but %s has only %d layers",
			ErrTooManyStages, req.Stages, name, g.numLayers)
	}
	return nil
}

// filter drops busy peers, then untrusted ones (if asked), then those over
// the price limit; each step that leaves no one is the error.
func (g *group) filter(req Request, name string) ([]member, error) {
	ms := keep(g.members, func(p *Peer) bool { return p.ActiveSessions < max(p.MaxSessions, 1) })
	if len(ms) == 0 {
		return nil, fmt.Errorf("%w: all %d peers serving %s are at their session limit",
			ErrBusy, len(g.members), name)
	}
	if req.TrustedOnly {
		n := len(ms)
		if ms = keep(ms, func(p *Peer) bool { return p.Trusted || p.Requester }); len(ms) == 0 {
			return nil, fmt.Errorf("%w: none of the %d available peers serving %s is trusted",
				ErrNoTrustedPeer, n, name)
		}
	}
	if limit := req.MaxPricePer1kMicros; limit > 0 {
		cheapest := slices.MinFunc(ms, func(a, b member) int {
			return cmp.Compare(a.peer.PricePer1kMicros, b.peer.PricePer1kMicros)
		}).peer.PricePer1kMicros
		if ms = keep(ms, func(p *Peer) bool { return p.Requester || p.PricePer1kMicros <= limit }); len(ms) == 0 {
			return nil, fmt.Errorf("%w: the cheapest peer serving %s asks %s credits per 1k tokens, the limit is %s",
				ErrNoPeerWithinPrice, name, fmtPrice(cheapest), fmtPrice(limit))
		}
	}
	return ms, nil
}

func keep(ms []member, ok func(*Peer) bool) []member {
	var out []member
	for _, m := range ms {
		if ok(m.peer) {
			out = append(out, m)
		}
	}
	return out
}

// checkCapacity refuses a candidate set that cannot hold every layer.
func (g *group) checkCapacity(cs []cand, name string) error {
	layers, free := 0, uint64(0)
	for _, c := range cs {
		layers += c.cap
		free = addSat(free, c.free)
	}
	for a := range g.numLayers {
		if !slices.ContainsFunc(cs, func(c cand) bool { return c.reach[a] > a }) {
			return fmt.Errorf("%w: no eligible peer serving %s holds layer %d", ErrNoProvider, name, a)
		}
	}
	if layers >= g.numLayers {
		return nil
	}
	need := stageBytes(g.weightsBytes, g.numLayers, g.numLayers)
	err := fmt.Errorf("%w: the swarm has %s free for %s needing %s",
		ErrInsufficientMemory, fmtBytes(free), name, fmtBytes(need))
	if free >= need {
		err = fmt.Errorf("%w (in pieces too small: they hold %d of its %d layers)", err, layers, g.numLayers)
	}
	return err
}

// sortCanonical orders candidates: the requester, LAN peers by RTT, then the
// others grouped by region (regions by their nearest peer), by RTT within.
func sortCanonical(cs []cand) {
	regionRTT := map[string]time.Duration{}
	for _, c := range cs {
		if r, ok := regionRTT[regionKey(c)]; !ok || c.rtt < r {
			regionRTT[regionKey(c)] = c.rtt
		}
	}
	class := func(c cand) int {
		switch {
		case c.requester:
			return 0
		case c.lan:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		if c := cmp.Compare(class(a), class(b)); c != 0 || class(a) < 2 {
			return cmp.Or(c, cmp.Compare(a.rtt, b.rtt), cmp.Compare(a.id, b.id))
		}
		return cmp.Or(cmp.Compare(regionRTT[regionKey(a)], regionRTT[regionKey(b)]),
			cmp.Compare(regionKey(a), regionKey(b)), cmp.Compare(a.rtt, b.rtt), cmp.Compare(a.id, b.id))
	})
}

// regionKey groups peers by region; a peer without one is its own group.
func regionKey(c cand) string {
	if c.region == "" {
		return "\x00" + c.id
	}
	return c.region
}

// fmtBytes prints a size for people: "0.6 GB", "270 MB".
func fmtBytes(b uint64) string {
	if b >= 100_000_000 {
		return strconv.FormatFloat(float64(b)/1e9, 'f', 1, 64) + " GB"
	}
	return strconv.FormatFloat(float64(b)/1e6, 'f', 0, 64) + " MB"
}

// fmtPrice prints micros as credits: 1500 → "0.0015".
func fmtPrice(micros uint64) string {
	return strconv.FormatFloat(float64(micros)/1e6, 'f', -1, 64)
}
