package planner

import (
	"cmp"
	"slices"
)

// run searches the candidates for a chain of the given number of stages
// (0 = auto, see the package doc).
func (s *searcher) run(stages int) {
	all := make([]int, len(s.cs))
	for i := range all {
		all[i] = i
	}
	if stages <= 1 {
		for _, i := range all {
			s.trySubset([]int{i})
		}
		if s.best != nil || stages == 1 {
			return
		}
	}
	lo, hi := max(stages, 2), stages
	if stages == 0 {
		hi = min(len(s.cs), s.n)
	}
	if len(all) <= ExactMaxPeers {
		s.permute = ExactMaxPeers
		subsets(all, lo, hi, s.trySubset)
		return
	}
	s.permute = heuristicPermute
	pool := s.pool(stages)
	if len(pool) > maxSubsetPool && (stages == 0 || len(pool) > stages+2) {
		s.prefixes(pool, lo, min(hi, len(pool)))
	} else {
		slices.Sort(pool)
		subsets(pool, lo, min(hi, len(pool)), s.trySubset)
	}
	s.permute = improvePermute
	s.improve(stages == 0)
}

// maxImproveRounds bounds the local search after the pool search.
const maxImproveRounds = 8

// improve hill-climbs from the best chain found: it tries replacing one of
// its peers with one outside it and, when the stage count is free, adding or
// dropping one, and repeats while that finds a better chain.
func (s *searcher) improve(resize bool) {
	for range maxImproveRounds {
		start := s.best
		if start == nil {
			return
		}
		in := slices.Sorted(slices.Values(start.order))
		for _, o := range s.outside(in) {
			for i := range in {
				s.trySubset(sortedWith(slices.Delete(slices.Clone(in), i, i+1), o))
			}
			if resize {
				s.trySubset(sortedWith(in, o))
			}
		}
		for i := 0; resize && len(in) > 2 && i < len(in); i++ {
			s.trySubset(slices.Delete(slices.Clone(in), i, i+1))
		}
		if s.best == start {
			return
		}
	}
}

// outside lists the candidates not in the sorted set in.
func (s *searcher) outside(in []int) []int {
	var out []int
	for ci := range s.cs {
		if _, found := slices.BinarySearch(in, ci); !found && s.cs[ci].cap > 0 {
			out = append(out, ci)
		}
	}
	return out
}

// sortedWith is the sorted set in plus x, as a new slice.
func sortedWith(in []int, x int) []int {
	out := append(slices.Clone(in), x)
	slices.Sort(out)
	return out
}

// pool ranks the candidates by score and keeps the best ExactMaxPeers (or
// stages+2), widened with the next best that add a missing layer or memory
// until the pool can hold the model. It returns them best first.
func (s *searcher) pool(stages int) []int {
	ranked := make([]int, len(s.cs))
	sc := make([]float64, len(s.cs))
	for i := range ranked {
		ranked[i], sc[i] = i, s.score(i, stages)
	}
	slices.SortStableFunc(ranked, func(a, b int) int { return cmp.Compare(sc[a], sc[b]) })
	size := min(max(ExactMaxPeers, stages+2), len(ranked))
	pool := slices.Clone(ranked[:size])
	for _, ci := range ranked[size:] {
		gap, short := s.coverage(pool)
		if gap < 0 && !short {
			break
		}
		if (gap >= 0 && s.cs[ci].reach[gap] > gap) || (gap < 0 && s.cs[ci].cap > 0) {
			pool = append(pool, ci)
		}
	}
	return pool
}

// coverage reports the first layer no pool member can hold (-1 if none) and
// whether the pool's capacity falls short of the model.
func (s *searcher) coverage(pool []int) (gap int, short bool) {
	total := 0
	for _, ci := range pool {
		total += s.cs[ci].cap
	}
	for a := range s.n {
		if !slices.ContainsFunc(pool, func(ci int) bool { return s.cs[ci].cap > 0 && s.cs[ci].reach[a] > a }) {
			return a, total < s.n
		}
	}
	return -1, total < s.n
}

// prefixes tries the best-scored m candidates for each m in [lo, hi].
func (s *searcher) prefixes(ranked []int, lo, hi int) {
	for m := lo; m <= hi; m++ {
		sub := slices.Clone(ranked[:m])
		slices.Sort(sub)
		s.trySubset(sub)
	}
}
