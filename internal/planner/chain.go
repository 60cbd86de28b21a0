package planner

import (
	"slices"
	"time"
)

// chain is one candidate plan: candidates (indices into the canonical list)
// in pipeline order and the stage boundaries.
type chain struct {
	order   []int // stage i runs on cands[order[i]]
	bounds  []int // stage i holds [bounds[i], bounds[i+1])
	network time.Duration
	compute time.Duration
	load    time.Duration // the longest of its stages' model loads
	rank    time.Duration // latency plus WANPenalty per non-LAN stage, minus preference bonuses, plus the load's penalty
}

func (c *chain) latency() time.Duration { return c.network + c.compute }

// newChain prices a placed chain under the cost model.
func newChain(cs []cand, order, bounds []int) *chain {
	ch := &chain{order: slices.Clone(order), bounds: slices.Clone(bounds)}
	n := bounds[len(bounds)-1]
	penalty, load := time.Duration(0), time.Duration(0)
	for i, ci := range order {
		c := &cs[ci]
		load = max(load, c.load) // stages load at once: the slowest counts
		ch.load = max(ch.load, c.loadTime)
		ch.network += c.rtt
		ch.compute += computeTime(bounds[i+1]-bounds[i], n, c.speed)
		if !c.lan {
			penalty += WANPenalty
		}
		penalty -= c.bonus
	}
	ch.rank = ch.latency() + penalty + load
	return ch
}

// better orders chains: lower rank, then fewer stages, then the canonical
// order of their peers, then their boundaries. It is a total order, so the
// planner's choice does not depend on the order it tries chains in.
func better(a, b *chain) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	if len(a.order) != len(b.order) {
		return len(a.order) < len(b.order)
	}
	if c := slices.Compare(a.order, b.order); c != 0 {
		return c < 0
	}
	return slices.Compare(a.bounds, b.bounds) < 0
}

// cumulative turns layer counts into boundaries.
func cumulative(k []int) []int {
	b := make([]int, len(k)+1)
	for i, x := range k {
		b[i+1] = b[i] + x
	}
	return b
}
