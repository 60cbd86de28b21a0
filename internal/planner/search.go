package planner

import (
	"math"
	"time"
)

const (
	// maxSubsetPool is the largest pool whose subsets of every size are
	// tried; above it, auto mode tries the pool's best-scored prefixes.
	maxSubsetPool = 10
	// heuristicPermute is the largest subset of partial-range peers whose
	// every order the heuristic tries; larger ones get one order (byRanges).
	heuristicPermute = 5
	// improvePermute is the same for the local search, which tries many
	// more subsets.
	improvePermute = 3
)

// searcher finds the best chain over a group's candidates.
type searcher struct {
	cs      []cand // canonical order
	n       int    // layers
	limit   time.Duration
	permute int // largest partial-range subset whose orders are all tried
	best    *chain
	fastest time.Duration // fastest chain seen, even over the limit; 0 = none
}

// offer considers a placed chain.
func (s *searcher) offer(order, bounds []int) {
	ch := newChain(s.cs, order, bounds)
	if s.fastest == 0 || ch.latency() < s.fastest {
		s.fastest = max(ch.latency(), 1)
	}
	if s.limit > 0 && ch.latency() > s.limit {
		return
	}
	if s.best == nil || better(ch, s.best) {
		s.best = ch
	}
}

// trySubset splits the layers over the candidates sub (ascending indices)
// and offers the best placement.
func (s *searcher) trySubset(sub []int) {
	speeds, caps := make([]float64, len(sub)), make([]int, len(sub))
	full := true
	for i, ci := range sub {
		speeds[i], caps[i] = s.cs[ci].speed, s.cs[ci].cap
		full = full && s.cs[ci].full
	}
	k, ok := counts(s.n, speeds, caps)
	switch {
	case !ok:
	case full: // any order holds; the canonical one is the tie-break winner
		s.offer(sub, cumulative(k))
	case len(sub) <= s.permute:
		s.permuteAll(sub, k)
	default:
		s.byRanges(sub, k)
	}
}

// permuteAll tries every order of sub, sharing placement work between orders
// with a common prefix and dropping prefixes that cannot be completed.
func (s *searcher) permuteAll(sub, target []int) {
	p := newPlacer(s.n, len(sub))
	order, used := make([]int, 0, len(sub)), make([]bool, len(sub))
	var dfs func(j int)
	dfs = func(j int) {
		if j == len(sub) {
			if b, ok := p.bounds(); ok {
				s.offer(order, b)
			}
			return
		}
		for i, ci := range sub {
			if used[i] || !p.extend(j, &s.cs[ci], target[i]) {
				continue
			}
			used[i], order = true, append(order, ci)
			dfs(j + 1)
			used[i], order = false, order[:j]
		}
	}
	dfs(0)
}

// byRanges places a large subset in one order, found by walking the layers:
// at each boundary the next stage goes to a partial peer that can start
// there (the one whose range ends first), else to the next full-range peer,
// which stops short of where a waiting partial peer's range begins. The
// placer then settles the boundaries for that order.
func (s *searcher) byRanges(sub, target []int) {
	order, tgt := make([]int, 0, len(sub)), make([]int, 0, len(sub))
	used := make([]bool, len(sub))
	for b := 0; len(order) < len(sub) && b < s.n; {
		i := s.nextStage(sub, used, b)
		if i < 0 {
			return
		}
		used[i], order, tgt = true, append(order, sub[i]), append(tgt, target[i])
		step := min(target[i], s.cs[sub[i]].reach[b]-b)
		if s.cs[sub[i]].full {
			if w := s.nextPartialStart(sub, used, b); w > b {
				step = min(step, w-b)
			}
		}
		b += max(step, 1)
	}
	p := newPlacer(s.n, len(sub))
	for j, ci := range order {
		if !p.extend(j, &s.cs[ci], tgt[j]) {
			return
		}
	}
	if b, ok := p.bounds(); ok && len(order) == len(sub) {
		s.offer(order, b)
	}
}

// nextStage picks the unused member of sub for a stage starting at b: the
// partial peer holding b whose range ends first, else the first full-range
// peer; -1 if none can start at b.
func (s *searcher) nextStage(sub []int, used []bool, b int) int {
	best, full := -1, -1
	for i, ci := range sub {
		c := &s.cs[ci]
		switch {
		case used[i] || c.reach[b] <= b:
		case c.full:
			if full < 0 {
				full = i
			}
		case best < 0 || c.reach[b] < s.cs[sub[best]].reach[b]:
			best = i
		}
	}
	if best < 0 {
		return full
	}
	return best
}

// nextPartialStart is the first layer after b where an unused partial peer
// of sub holds a layer, or -1.
func (s *searcher) nextPartialStart(sub []int, used []bool, b int) int {
	w := -1
	for i, ci := range sub {
		c := &s.cs[ci]
		if used[i] || c.full {
			continue
		}
		for a := b + 1; a < s.n && (w < 0 || a < w); a++ {
			if c.reach[a] > a {
				w = a
				break
			}
		}
	}
	return w
}

// subsets calls f with every subset of pool (ascending) of a size in
// [lo, hi].
func subsets(pool []int, lo, hi int, f func([]int)) {
	sub := make([]int, 0, len(pool))
	var rec func(from int)
	rec = func(from int) {
		if len(sub) >= lo {
			f(sub)
		}
		if len(sub) == hi {
			return
		}
		for i := from; i < len(pool); i++ {
			sub = append(sub, pool[i])
			rec(i + 1)
			sub = sub[:len(sub)-1]
		}
	}
	rec(0)
}

// score is a candidate's amortised cost per layer: its RTT (and WAN penalty)
// spread over the layers it would hold — all it can when the stage count is
// free, about an even share when it is fixed — plus its compute per layer.
// Lower is better; the heuristic keeps the best-scored candidates.
func (s *searcher) score(ci, stages int) float64 {
	c := &s.cs[ci]
	if c.cap < 1 {
		return math.Inf(1)
	}
	rtt, share := c.rtt, float64(c.cap)
	if !c.lan {
		rtt += WANPenalty
	}
	rtt -= c.bonus
	if stages > 0 {
		share = min(share, float64(s.n)/float64(stages))
	}
	return float64(rtt)/share + float64(time.Second)/(float64(s.n)*c.speed)
}
