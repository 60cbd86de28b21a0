package planner

import (
	"errors"
	"strings"
	"testing"
)

func TestReplace(t *testing.T) {
	half := uint64(0.35 * gb) // holds 17 of smol's 30 layers
	small := uint64(0.1 * gb) // holds 4 layers
	// The plan being repaired: a[0,15) b[15,30), both busy with it.
	busy := func(p Peer) Peer { return with(p, func(p *Peer) { p.ActiveSessions = 1 }) }
	a, b := busy(peer("a", half, 50, ms)), busy(peer("b", half, 50, ms))
	plan, err := Choose([]Peer{peer("a", half, 50, ms), peer("b", half, 50, ms)}, Request{Model: smolID, Stages: 2})
	if err != nil || ids(plan) != "a[0,15) b[15,30)" {
		t.Fatalf("base plan %s: %v", ids(plan), err)
	}
	tests := []struct {
		name  string
		lost  []string
		peers []Peer // besides a and b
		req   Request
		want  string // ids(plan), or the error's text
		err   error
	}{
		{"the lost stage moves, the other stays", []string{"b"}, []Peer{peer("c", half, 50, 2*ms)}, Request{},
			"a[0,15) c[15,30)", nil},
		{"the first stage moves", []string{"a"}, []Peer{peer("c", half, 50, 2*ms)}, Request{},
			"c[0,15) b[15,30)", nil},
		{"the cheapest of several", []string{"b"}, []Peer{peer("slow", half, 5, ms), peer("near", half, 50, ms),
			peer("far", half, 50, 40*ms)}, Request{}, "a[0,15) near[15,30)", nil},
		{"equal costs: canonical order", []string{"b"}, []Peer{peer("y", half, 50, ms), peer("x", half, 50, ms)},
			Request{}, "a[0,15) x[15,30)", nil},
		{"LAN wins a near tie", []string{"b"}, []Peer{peer("wan", half, 50, ms),
			with(peer("lan", half, 50, ms+ms/2), func(p *Peer) { p.LAN = true })}, Request{}, "a[0,15) lan[15,30)", nil},
		{"both lost, two new peers", []string{"a", "b"}, []Peer{peer("c", half, 50, ms), peer("d", half, 50, 2*ms)},
			Request{}, "c[0,15) d[15,30)", nil},
		{"a lost peer still listed is not reused", []string{"b"}, []Peer{peer("c", half, 50, 9*ms)}, Request{},
			"a[0,15) c[15,30)", nil},
		{"too little memory", []string{"b"}, []Peer{peer("c", small, 50, ms)}, Request{},
			"no other peer can hold layers [15,30) of smollm2-135m (weights bafk-smol), lost with b", ErrNoProvider},
		{"range outside what the peer holds", []string{"b"}, []Peer{peer("c", gb, 50, ms, smol(LayerRange{0, 20}))},
			Request{}, "layers [15,30)", ErrNoProvider},
		{"a peer holding just the range", []string{"b"}, []Peer{peer("c", gb, 50, ms, smol(LayerRange{15, 30}))},
			Request{}, "a[0,15) c[15,30)", nil},
		{"other weights", []string{"b"}, []Peer{peer("c", gb, 50, ms, Model{ID: smolID, WeightsCID: "other",
			NumLayers: smolL})}, Request{}, "layers [15,30)", ErrNoProvider},
		{"nobody else", []string{"b"}, nil, Request{}, "(0 candidates)", ErrNoProvider},
		{"busy replacement", []string{"b"}, []Peer{busy(peer("c", half, 50, ms))}, Request{}, "session limit", ErrBusy},
		{"over the price limit", []string{"b"}, []Peer{with(peer("c", half, 50, ms), func(p *Peer) { p.PricePer1kMicros = 5000 })},
			Request{MaxPricePer1kMicros: 1000}, "limit", ErrNoPeerWithinPrice},
		{"untrusted", []string{"b"}, []Peer{with(peer("c", half, 50, ms), func(p *Peer) { p.Trusted = false })},
			Request{TrustedOnly: true}, "trusted", ErrNoTrustedPeer},
		{"over the latency limit", []string{"b"}, []Peer{peer("c", half, 50, 200*ms)},
			Request{MaxTokenLatency: 100 * ms}, "per token", ErrLatencyLimit},
		{"lost names no stage", []string{"zz"}, []Peer{peer("c", half, 50, ms)}, Request{}, "holds a stage",
			ErrInvalidRequest},
		{"nothing lost", nil, []Peer{peer("c", half, 50, ms)}, Request{}, "holds a stage", ErrInvalidRequest},
		{"a peer listed twice", []string{"b"}, []Peer{peer("c", half, 50, ms), peer("c", half, 50, ms)}, Request{},
			"twice", ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			peers := append([]Peer{a, b}, tt.peers...)
			got, err := Replace(plan, tt.lost, peers, tt.req)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Replace = %s, %v; want %v containing %q", ids(got), err, tt.err, tt.want)
				}
				return
			}
			if err != nil || ids(got) != tt.want {
				t.Fatalf("Replace = %s, %v; want %s", ids(got), err, tt.want)
			}
			// The result is a valid plan over the peers that run it (the
			// survivors count as idle: they are in this very plan).
			idle := make([]Peer, len(peers))
			for i, p := range peers {
				idle[i] = with(p, func(p *Peer) { p.ActiveSessions = 0 })
			}
			checkPlan(t, idle, Request{Model: smolID, MaxTokenLatency: tt.req.MaxTokenLatency}, got)
			var price uint64
			for _, st := range got.Stages {
				price += st.Price
			}
			if price != got.PricePer1kMicros {
				t.Errorf("price %d, stages sum to %d", got.PricePer1kMicros, price)
			}
			if got.Model != plan.Model || got.WeightsCID != plan.WeightsCID || got.NumLayers != plan.NumLayers {
				t.Errorf("model changed: %+v", got)
			}
		})
	}
}

// TestReplacePrice: a replacement's share of the price replaces the lost
// stage's; the survivors' shares stay.
func TestReplacePrice(t *testing.T) {
	half := uint64(0.35 * gb)
	priced := func(id string, price uint64) Peer {
		return with(peer(id, half, 50, ms), func(p *Peer) { p.PricePer1kMicros = price })
	}
	plan, err := Choose([]Peer{priced("a", 3000), priced("b", 6000)}, Request{Model: smolID, Stages: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Replace(plan, []string{"b"}, []Peer{priced("c", 600)}, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(3000*15/30 + 600*15/30); got.PricePer1kMicros != want || ids(got) != "a[0,15) c[15,30)" {
		t.Fatalf("price %d plan %s; want %d", got.PricePer1kMicros, ids(got), want)
	}
}
