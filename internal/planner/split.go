package planner

import "math"

// shares water-fills n layers over peers in proportion to their speeds,
// capping each at caps[i] and handing the excess to the others. The caller
// guarantees Σ caps ≥ n.
func shares(n int, speeds []float64, caps []int) []float64 {
	s := make([]float64, len(speeds))
	capped := make([]bool, len(speeds))
	for {
		rest, weight := float64(n), 0.0
		for i := range s {
			if capped[i] {
				rest -= float64(caps[i])
			} else {
				weight += speeds[i]
			}
		}
		changed := false
		for i := range s {
			if capped[i] {
				continue
			}
			if s[i] = rest * speeds[i] / weight; s[i] > float64(caps[i]) {
				s[i], capped[i], changed = float64(caps[i]), true, true
			}
		}
		if !changed {
			return s
		}
	}
}

// counts splits n layers over peers: proportional shares (see shares),
// rounded by largest remainder to whole layers, each at least 1 and at most
// its cap. It reports false when no such split exists.
func counts(n int, speeds []float64, caps []int) ([]int, bool) {
	total := 0
	for _, c := range caps {
		if c < 1 {
			return nil, false
		}
		total += c
	}
	if len(caps) == 0 || len(caps) > n || total < n {
		return nil, false
	}
	s := shares(n, speeds, caps)
	k, sum := make([]int, len(s)), 0
	for i := range s {
		k[i] = min(max(int(math.Floor(s[i])), 1), caps[i])
		sum += k[i]
	}
	for ; sum < n; sum++ { // largest remainder first; faster peer on ties
		k[pick(s, func(i int) (float64, bool) { return s[i] - float64(k[i]), k[i] < caps[i] }, speeds)]++
	}
	for ; sum > n; sum-- { // only after the ≥1 floor: take from the most over
		k[pick(s, func(i int) (float64, bool) { return float64(k[i]) - s[i], k[i] > 1 }, negate(speeds))]--
	}
	return k, true
}

// pick returns the allowed index with the largest score, ties to the largest
// tie value, then the lowest index.
func pick(s []float64, score func(int) (float64, bool), tie []float64) int {
	best, bestScore := -1, 0.0
	for i := range s {
		sc, ok := score(i)
		if ok && (best < 0 || sc > bestScore || (sc == bestScore && tie[i] > tie[best])) {
			best, bestScore = i, sc
		}
	}
	return best
}

func negate(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = -x
	}
	return out
}
