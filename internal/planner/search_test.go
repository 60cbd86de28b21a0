package planner

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

// randomSwarm makes n peers serving a model of 2..24 layers (1 GB of
// weights) under two weight CIDs, with random memory, speed (sometimes
// unmeasured), RTT (sometimes unmeasured), LAN, trust, price, load, region
// and, for some, only part of the layers; and a random request.
func randomSwarm(rng *rand.Rand, n int) ([]Peer, Request) {
	layers := 2 + rng.IntN(23)
	peers := make([]Peer, n)
	for i := range peers {
		m := Model{ID: "m", WeightsCID: "cid-a", NumLayers: layers, WeightsBytes: gb}
		if rng.IntN(8) == 0 {
			m.WeightsCID = "cid-b"
		}
		if rng.IntN(4) == 0 {
			s := rng.IntN(layers)
			m.LayerRanges = []LayerRange{{s, s + 1 + rng.IntN(layers-s)}}
		}
		p := Peer{ID: string(rune('a'+i%26)) + itoa(i), Models: []Model{m}, MaxSessions: 1 + rng.IntN(2),
			MemoryFreeBytes: uint64(rng.Float64() * 1.3 * gb), DecodeTokensPerS: 1 + rng.Float64()*99,
			RTT: time.Duration(1 + rng.Int64N(int64(80*time.Millisecond))), LAN: rng.IntN(3) == 0,
			Trusted: rng.IntN(4) != 0, PricePer1kMicros: uint64(rng.IntN(3000)),
			Region: []string{"", "eu", "us", "ap"}[rng.IntN(4)], ActiveSessions: rng.IntN(2)}
		if rng.IntN(10) == 0 {
			p.DecodeTokensPerS = 0
		}
		if rng.IntN(10) == 0 {
			p.RTT = 0
		}
		p.Requester = i == 0 && rng.IntN(4) == 0
		peers[i] = p
	}
	req := Request{Model: "m", Stages: rng.IntN(4), TrustedOnly: rng.IntN(5) == 0}
	if rng.IntN(5) == 0 {
		req.MaxPricePer1kMicros = 1500
	}
	if rng.IntN(5) == 0 {
		req.MaxTokenLatency = time.Duration(50+rng.IntN(400)) * time.Millisecond
	}
	return peers, req
}

// bruteForce is the best rank over every ordered chain of every subset of
// the eligible peers of every weights group, under the planner's split rule
// and auto rule (a single peer if one fits within the limits).
func bruteForce(peers []Peer, req Request) (time.Duration, bool) {
	best, found := time.Duration(0), false
	for _, g := range groups(peers, req) {
		cs, err := g.eligible(req)
		if err != nil {
			continue
		}
		r, ok := bruteGroup(cs, g.numLayers, req)
		if ok && (!found || r < best) {
			best, found = r, true
		}
	}
	return best, found
}

func bruteGroup(cs []cand, n int, req Request) (time.Duration, bool) {
	var bestSingle, bestAny time.Duration
	single, anyOK := false, false
	forEachOrder(len(cs), func(order []int) {
		if req.Stages > 0 && len(order) != req.Stages {
			return
		}
		r, ok := bruteRank(cs, n, order, req.MaxTokenLatency)
		if !ok {
			return
		}
		if len(order) == 1 && (!single || r < bestSingle) {
			bestSingle, single = r, true
		}
		if !anyOK || r < bestAny {
			bestAny, anyOK = r, true
		}
	})
	if req.Stages == 0 && single {
		return bestSingle, true
	}
	return bestAny, anyOK
}

// forEachOrder calls f with every ordered selection of distinct indices < n.
func forEachOrder(n int, f func([]int)) {
	order, used := []int{}, make([]bool, n)
	var rec func()
	rec = func() {
		if len(order) > 0 {
			f(order)
		}
		for i := range n {
			if !used[i] {
				used[i], order = true, append(order, i)
				rec()
				used[i], order = false, order[:len(order)-1]
			}
		}
	}
	rec()
}

// bruteRank places one ordered chain and ranks it from first principles.
func bruteRank(cs []cand, n int, order []int, limit time.Duration) (time.Duration, bool) {
	speeds, caps := make([]float64, len(order)), make([]int, len(order))
	for i, ci := range order {
		speeds[i], caps[i] = cs[ci].speed, cs[ci].cap
	}
	k, ok := counts(n, speeds, caps)
	if !ok {
		return 0, false
	}
	p := newPlacer(n, len(order))
	for j, ci := range order {
		if !p.extend(j, &cs[ci], k[j]) {
			return 0, false
		}
	}
	b, ok := p.bounds()
	if !ok {
		return 0, false
	}
	var latency, penalty time.Duration
	for j, ci := range order {
		latency += cs[ci].rtt + testCompute(b[j+1]-b[j], n, cs[ci].speed)
		if !cs[ci].lan {
			penalty += WANPenalty
		}
	}
	if limit > 0 && latency > limit {
		return 0, false
	}
	return latency + penalty, true
}

// TestExactMatchesBruteForce: on random swarms of up to ExactMaxPeers
// peers, the planner's plan is valid and ranks exactly as the best of every
// ordered chain; when it refuses, no chain exists; shuffling its input does
// not change its answer.
func TestExactMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	planned := 0
	for i := range 1500 {
		peers, req := randomSwarm(rng, 1+rng.IntN(ExactMaxPeers))
		want, ok := bruteForce(peers, req)
		p, err := Choose(peers, req)
		if ok != (err == nil) {
			t.Fatalf("swarm %d: brute force found=%v (rank %v), planner: %v %s", i, ok, want, err, ids(p))
		}
		if err != nil {
			continue
		}
		planned++
		checkPlan(t, peers, req, p)
		if got := testRank(p); got != want {
			t.Fatalf("swarm %d: planner %s ranks %v, brute force %v", i, ids(p), got, want)
		}
		shuffled := slices.Clone(peers)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if q, _ := Choose(shuffled, req); !reflect.DeepEqual(p, q) {
			t.Fatalf("swarm %d: input order changed the plan: %s vs %s", i, ids(p), ids(q))
		}
	}
	t.Logf("%d of 1500 random swarms planned, all optimal", planned)
	if planned < 300 {
		t.Fatalf("only %d swarms planned: the generator is too harsh to test much", planned)
	}
}

// TestHeuristicValid: on swarms larger than ExactMaxPeers the plan is valid;
// on full-range swarms it is compared with the best subset (the order of
// full-range peers does not change a rank), on 8-peer swarms with brute
// force, and the gap is logged.
func TestHeuristicValid(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	planned, compared, optimal, worst := 0, 0, 0, 1.0
	for i := range 300 {
		peers, req := randomSwarm(rng, ExactMaxPeers+1+rng.IntN(8))
		if i%2 == 0 { // every peer holds the whole model: the optimum is known
			for j := range peers {
				peers[j].Models[0].LayerRanges = nil
			}
		}
		p, err := Choose(peers, req)
		if err != nil {
			continue
		}
		planned++
		checkPlan(t, peers, req, p)
		want, ok := bestFullRangeSubset(peers, req)
		if !ok && len(peers) == ExactMaxPeers+1 {
			want, ok = bruteForce(peers, req)
		}
		if ok {
			compared++
			ratio := float64(testRank(p)) / float64(want)
			if ratio < 1-1e-12 {
				t.Fatalf("swarm %d: heuristic %v beats the optimum %v", i, testRank(p), want)
			}
			if ratio == 1 {
				optimal++
			}
			if ratio > 1.25 { // a regression guard, not a promise
				t.Fatalf("swarm %d: heuristic %s ranks %v, %.2f× the optimum %v", i, ids(p), testRank(p), ratio, want)
			}
			worst = max(worst, ratio)
		}
	}
	t.Logf("%d swarms planned; %d of %d compared with the optimum equal it, the worst is %.3f× the optimum",
		planned, optimal, compared, worst)
}

// bestFullRangeSubset is the exact optimum when every peer holds the whole
// model: the best rank over subsets in canonical order. ok is false for
// swarms with partial peers.
func bestFullRangeSubset(peers []Peer, req Request) (time.Duration, bool) {
	for _, p := range peers {
		if len(p.Models[0].LayerRanges) > 0 {
			return 0, false
		}
	}
	best, found := time.Duration(0), false
	for _, g := range groups(peers, req) {
		cs, err := g.eligible(req)
		if err != nil {
			continue
		}
		var bestSingle, bestAny time.Duration
		single, anyOK := false, false
		all := make([]int, len(cs))
		for i := range all {
			all[i] = i
		}
		hi := len(cs)
		if req.Stages > 0 {
			hi = req.Stages
		}
		subsets(all, max(req.Stages, 1), hi, func(sub []int) {
			r, ok := bruteRank(cs, g.numLayers, sub, req.MaxTokenLatency)
			if !ok {
				return
			}
			if len(sub) == 1 && (!single || r < bestSingle) {
				bestSingle, single = r, true
			}
			if !anyOK || r < bestAny {
				bestAny, anyOK = r, true
			}
		})
		r, ok := bestAny, anyOK
		if req.Stages == 0 && single {
			r = bestSingle
		}
		if ok && (!found || r < best) {
			best, found = r, true
		}
	}
	return best, found
}

// hundredPeers is a 100-peer swarm for a 32-layer, 1 GB model: most peers
// hold only a few layers (some memory is tiny, some large), so plans need
// several stages and the heuristic's pool has to widen.
func hundredPeers(rng *rand.Rand, tiny bool) []Peer {
	peers, _ := randomSwarm(rng, 100)
	for i := range peers {
		m := &peers[i].Models[0]
		m.NumLayers, m.LayerRanges = 32, nil
		if rng.IntN(5) == 0 {
			s := rng.IntN(32)
			m.LayerRanges = []LayerRange{{s, s + 1 + rng.IntN(32-s)}}
		}
		if tiny {
			peers[i].MemoryFreeBytes = uint64(0.02*gb + rng.Float64()*0.2*gb)
		}
	}
	return peers
}

// TestHundredPeerSwarm plans several requests over 100-peer swarms: every
// plan is valid, a single-peer choice is the best single peer, and the
// answer does not depend on the order of the input.
func TestHundredPeerSwarm(t *testing.T) {
	rng := rand.New(rand.NewPCG(100, 1))
	for _, tiny := range []bool{false, true} {
		peers := hundredPeers(rng, tiny)
		for _, req := range []Request{
			{Model: "m"}, {Model: "m", Stages: 2}, {Model: "m", Stages: 5}, {Model: "m", Stages: 12},
			{Model: "m", TrustedOnly: true, MaxPricePer1kMicros: 1000}, {Model: "m", WeightsCID: "cid-b"},
			{Model: "m", Stages: 3, MaxTokenLatency: 100 * time.Millisecond},
		} {
			t.Run(fmt.Sprintf("tiny=%v/%+v", tiny, req), func(t *testing.T) { checkHundred(t, rng, peers, req) })
		}
	}
}

func checkHundred(t *testing.T, rng *rand.Rand, peers []Peer, req Request) {
	p, err := Choose(peers, req)
	if err != nil {
		if errors.Is(err, ErrInvalidRequest) {
			t.Fatal(err)
		}
		t.Logf("refused: %v", err)
		return
	}
	checkPlan(t, peers, req, p)
	if len(p.Stages) == 1 && req.Stages == 0 {
		req1 := req
		req1.Stages = 1
		if want, _ := bruteSingles(peers, req1); testRank(p) != want {
			t.Fatalf("single %s ranks %v, best single %v", ids(p), testRank(p), want)
		}
	}
	shuffled := slices.Clone(peers)
	rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
	if q, _ := Choose(shuffled, req); !reflect.DeepEqual(p, q) {
		t.Fatalf("input order changed the plan: %s vs %s", ids(p), ids(q))
	}
	t.Logf("%d stages, %v per token: %s", len(p.Stages), p.ExpectedTokenLatency, ids(p))
}

// bruteSingles is the best rank of a one-stage plan.
func bruteSingles(peers []Peer, req Request) (time.Duration, bool) {
	best, found := time.Duration(0), false
	for _, g := range groups(peers, req) {
		cs, err := g.eligible(req)
		for i := range cs {
			if r, ok := bruteRank(cs, g.numLayers, []int{i}, req.MaxTokenLatency); err == nil && ok && (!found || r < best) {
				best, found = r, true
			}
		}
	}
	return best, found
}
