package planner

import (
	"math/big"
	"strconv"
	"testing"
	"time"
)

const (
	smolID  = "smollm2-135m"
	smolCID = "bafk-smol"
	smolL   = 30
	// smolBytes needs 0.6 GB with the 10% overhead.
	smolBytes = 545_454_545
	gb        = 1_000_000_000
)

// smol is the test model, optionally restricted to some layer ranges.
func smol(ranges ...LayerRange) Model {
	return Model{ID: smolID, WeightsCID: smolCID, NumLayers: smolL, WeightsBytes: smolBytes, LayerRanges: ranges}
}

// peer is a trusted, idle peer serving models (smol by default).
func peer(id string, free uint64, speed float64, rtt time.Duration, models ...Model) Peer {
	if len(models) == 0 {
		models = []Model{smol()}
	}
	return Peer{ID: id, Models: models, MemoryFreeBytes: free, DecodeTokensPerS: speed,
		MaxSessions: 1, RTT: rtt, Trusted: true}
}

// with applies changes to a copy of p.
func with(p Peer, f func(*Peer)) Peer { f(&p); return p }

// checkPlan verifies a plan against the raw inputs, independently of the
// planner's internals: contiguous cover, every stage on an eligible peer
// inside one of its ranges and its memory, the limits, and the latency.
func checkPlan(t *testing.T, peers []Peer, req Request, p Plan) {
	t.Helper()
	byID := map[string]Peer{}
	for _, pe := range peers {
		byID[pe.ID] = pe
	}
	if len(p.Stages) == 0 || (req.Stages > 0 && len(p.Stages) != req.Stages) {
		t.Fatalf("plan has %d stages, asked %d: %+v", len(p.Stages), req.Stages, p)
	}
	var latency time.Duration
	used := map[string]bool{}
	for i, st := range p.Stages {
		pe, ok := byID[st.PeerID]
		if !ok || used[st.PeerID] {
			t.Fatalf("stage %d on unknown or repeated peer %s", i, st.PeerID)
		}
		used[st.PeerID] = true
		want := 0
		if i > 0 {
			want = p.Stages[i-1].End
		}
		if st.Start != want || st.End <= st.Start {
			t.Fatalf("stage %d is [%d,%d), want it to start at %d", i, st.Start, st.End, want)
		}
		checkStagePeer(t, pe, req, p, st)
		latency += testRTT(pe) + testCompute(st.Layers(), p.NumLayers, pe.DecodeTokensPerS)
	}
	if last := p.Stages[len(p.Stages)-1].End; last != p.NumLayers {
		t.Fatalf("plan ends at %d of %d layers", last, p.NumLayers)
	}
	if latency != p.ExpectedTokenLatency || p.NetworkLatency+p.ComputeLatency != latency {
		t.Fatalf("latency %v, recomputed %v", p.ExpectedTokenLatency, latency)
	}
	if req.MaxTokenLatency > 0 && latency > req.MaxTokenLatency {
		t.Fatalf("latency %v over the limit %v", latency, req.MaxTokenLatency)
	}
}

func checkStagePeer(t *testing.T, pe Peer, req Request, p Plan, st Stage) {
	t.Helper()
	if pe.ActiveSessions >= max(pe.MaxSessions, 1) {
		t.Fatalf("busy peer %s in the plan", pe.ID)
	}
	if req.TrustedOnly && !pe.Trusted && !pe.Requester {
		t.Fatalf("untrusted peer %s in a trusted-only plan", pe.ID)
	}
	if req.MaxPricePer1kMicros > 0 && !pe.Requester && pe.PricePer1kMicros > req.MaxPricePer1kMicros {
		t.Fatalf("peer %s asks %d, over the limit", pe.ID, pe.PricePer1kMicros)
	}
	inRange := false
	for _, m := range pe.Models {
		if m.WeightsCID != p.WeightsCID || m.NumLayers != p.NumLayers {
			continue
		}
		if len(m.LayerRanges) == 0 {
			inRange = true
		}
		for _, r := range m.LayerRanges {
			inRange = inRange || (r.Start <= st.Start && st.End <= r.End)
		}
	}
	if !inRange {
		t.Fatalf("stage [%d,%d) on %s is outside its ranges", st.Start, st.End, pe.ID)
	}
	// need = ceil(bytes · layers · 1.1 / numLayers), in exact arithmetic.
	need := new(big.Int).Mul(new(big.Int).SetUint64(p.WeightsBytes), big.NewInt(int64(st.Layers()*110)))
	den := big.NewInt(int64(p.NumLayers * 100))
	need.Add(need, new(big.Int).Sub(den, big.NewInt(1))).Quo(need, den)
	if need.Cmp(new(big.Int).SetUint64(pe.MemoryFreeBytes)) > 0 || need.Uint64() != st.MemoryBytes {
		t.Fatalf("stage [%d,%d) on %s needs %v bytes (plan says %d), has %d",
			st.Start, st.End, pe.ID, need, st.MemoryBytes, pe.MemoryFreeBytes)
	}
}

func testRTT(p Peer) time.Duration {
	switch {
	case p.Requester:
		return 0
	case p.RTT == 0:
		return UnmeasuredRTT
	}
	return p.RTT
}

func testCompute(layers, numLayers int, speed float64) time.Duration {
	if speed <= 0 {
		speed = UnmeasuredDecodeTokensPerS
	}
	return time.Duration(float64(layers)/(float64(numLayers)*speed)*1e9 + 0.5)
}

// testRank is a plan's rank recomputed from its stages.
func testRank(p Plan) time.Duration {
	r := p.ExpectedTokenLatency
	for _, st := range p.Stages {
		if !st.LAN {
			r += WANPenalty
		}
	}
	return r
}

// ids lists a plan's peers and ranges compactly, e.g. "a[0,20) b[20,30)".
func ids(p Plan) string {
	s := ""
	for i, st := range p.Stages {
		if i > 0 {
			s += " "
		}
		s += st.PeerID + "[" + itoa(st.Start) + "," + itoa(st.End) + ")"
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }
