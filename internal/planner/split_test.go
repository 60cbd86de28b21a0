package planner

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestShares(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		speeds []float64
		caps   []int
		want   []float64
	}{
		{"by speed", 30, []float64{30, 10}, []int{30, 30}, []float64{22.5, 7.5}},
		{"equal", 30, []float64{5, 5, 5}, []int{30, 30, 30}, []float64{10, 10, 10}},
		{"capped", 30, []float64{100, 10}, []int{10, 30}, []float64{10, 20}},
		{"cascade", 30, []float64{100, 50, 1}, []int{10, 10, 30}, []float64{10, 10, 10}},
		{"all capped", 30, []float64{1, 2}, []int{10, 20}, []float64{10, 20}},
	}
	for _, tc := range tests {
		got := shares(tc.n, tc.speeds, tc.caps)
		if !slices.EqualFunc(got, tc.want, func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }) {
			t.Errorf("%s: shares = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		speeds []float64
		caps   []int
		want   []int // nil: impossible
	}{
		{"largest remainder, tie to the faster", 30, []float64{30, 10}, []int{30, 30}, []int{23, 7}},
		{"remainders", 10, []float64{1, 1, 1}, []int{10, 10, 10}, []int{4, 3, 3}},
		{"at least one layer each", 10, []float64{1000, 1, 1}, []int{10, 10, 10}, []int{8, 1, 1}},
		{"cap respected", 30, []float64{100, 10}, []int{10, 30}, []int{10, 20}},
		{"exactly full", 4, []float64{1, 9}, []int{2, 2}, []int{2, 2}},
		{"too little room", 30, []float64{1, 1}, []int{10, 10}, nil},
		{"zero cap", 30, []float64{1, 1}, []int{0, 30}, nil},
		{"more peers than layers", 2, []float64{1, 1, 1}, []int{2, 2, 2}, nil},
		{"none", 2, nil, nil, nil},
	}
	for _, tc := range tests {
		got, ok := counts(tc.n, tc.speeds, tc.caps)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: counts = %v %v, want %v", tc.name, got, ok, tc.want)
		}
	}
}

// TestCountsProperties: on random inputs a split covers n exactly, keeps
// every stage in [1, cap], and stays within a layer of its share unless the
// one-layer floor forced it.
func TestCountsProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		n, k := 1+rng.IntN(80), 1+rng.IntN(8)
		speeds, caps := make([]float64, k), make([]int, k)
		for i := range k {
			speeds[i], caps[i] = 0.5+rng.Float64()*100, 1+rng.IntN(n)
		}
		got, ok := counts(n, speeds, caps)
		total := 0
		for _, c := range caps {
			total += c
		}
		if ok != (k <= n && total >= n) {
			t.Fatalf("counts(%d, %v, %v) ok=%v", n, speeds, caps, ok)
		}
		if !ok {
			continue
		}
		s, sum, floored := shares(n, speeds, caps), 0, false
		for i := range got {
			sum += got[i]
			floored = floored || s[i] < 1
			if got[i] < 1 || got[i] > caps[i] {
				t.Fatalf("counts(%d, %v, %v) = %v out of [1, cap]", n, speeds, caps, got)
			}
		}
		for i := range got {
			if sum != n || (!floored && math.Abs(float64(got[i])-s[i]) >= 1) {
				t.Fatalf("counts(%d, %v, %v) = %v, shares %v", n, speeds, caps, got, s)
			}
		}
	}
}

// rangeCand is a candidate holding the given ranges of n layers.
func rangeCand(id string, n, capacity int, speed float64, ranges ...LayerRange) cand {
	g := &group{numLayers: n}
	p := &Peer{ID: id, DecodeTokensPerS: speed, MemoryFreeBytes: uint64(capacity)}
	g.weightsBytes = 0
	c := g.newCand(member{peer: p, ranges: clipRanges(ranges, n)})
	c.cap = min(c.cap, capacity)
	return c
}

func TestPlacer(t *testing.T) {
	tests := []struct {
		name   string
		cands  []cand
		target []int
		want   []int // nil: no placement
	}{
		{"targets when the ranges allow", []cand{rangeCand("a", 30, 30, 1), rangeCand("b", 30, 30, 1)},
			[]int{20, 10}, []int{0, 20, 30}},
		{"ranges move a boundary", []cand{rangeCand("a", 30, 30, 1, LayerRange{0, 12}), rangeCand("b", 30, 30, 1)},
			[]int{20, 10}, []int{0, 12, 30}},
		{"middle stage pinned", []cand{rangeCand("x", 30, 20, 1), rangeCand("m", 30, 30, 1, LayerRange{5, 15}),
			rangeCand("y", 30, 20, 1)}, []int{10, 10, 10}, []int{0, 5, 15, 30}},
		{"ties go to less compute", []cand{rangeCand("fast", 30, 30, 100), rangeCand("m", 30, 8, 1, LayerRange{5, 25}),
			rangeCand("y", 30, 30, 1)}, []int{10, 10, 10}, []int{0, 12, 20, 30}},
		{"ties go to less compute, the other way", []cand{rangeCand("x", 30, 30, 1), rangeCand("m", 30, 8, 1, LayerRange{5, 25}),
			rangeCand("fast", 30, 30, 100)}, []int{10, 10, 10}, []int{0, 10, 18, 30}},
		{"cap respected", []cand{rangeCand("a", 10, 3, 1), rangeCand("b", 10, 3, 1)}, []int{5, 5}, nil},
		{"wrong order", []cand{rangeCand("hi", 10, 10, 1, LayerRange{5, 10}), rangeCand("lo", 10, 10, 1, LayerRange{0, 5})},
			[]int{5, 5}, nil},
	}
	for _, tc := range tests {
		n := len(tc.cands[0].reach)
		p := newPlacer(n, len(tc.cands))
		ok := true
		for j := range tc.cands {
			ok = ok && p.extend(j, &tc.cands[j], tc.target[j])
		}
		got, ok2 := p.bounds()
		if ok && ok2 != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: bounds %v, want %v", tc.name, got, tc.want)
		}
	}
}
