package planner

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestChoose(t *testing.T) {
	half := uint64(0.35 * gb) // holds 17 of smol's 30 layers
	tests := []struct {
		name  string
		peers []Peer
		req   Request
		want  string // ids(plan)
	}{
		{"one peer that fits", []Peer{peer("a", gb, 20, 5*ms)}, Request{}, "a[0,30)"},
		{"the fastest single peer", []Peer{peer("a", gb, 20, 5*ms), peer("b", gb, 40, 5*ms)}, Request{}, "b[0,30)"},
		{"single peer beats a faster split", []Peer{peer("a", gb, 5, 5*ms), peer("b", half, 100, ms),
			peer("c", half, 100, ms)}, Request{}, "a[0,30)"},
		{"LAN wins a near tie", []Peer{peer("wan", gb, 100, 10*ms),
			with(peer("lan", gb, 100, 11*ms), func(p *Peer) { p.LAN = true })}, Request{}, "lan[0,30)"},
		{"WAN wins when clearly faster", []Peer{peer("wan", gb, 100, 10*ms),
			with(peer("lan", gb, 100, 13*ms), func(p *Peer) { p.LAN = true })}, Request{}, "wan[0,30)"},
		{"the requester hosts it", []Peer{peer("a", gb, 100, 5*ms),
			with(peer("me", gb, 90, 50*ms), func(p *Peer) { p.Requester = true })}, Request{}, "me[0,30)"},
		{"split in proportion to speed", []Peer{peer("a", uint64(0.5*gb), 30, ms), peer("b", uint64(0.5*gb), 10, ms)},
			Request{}, "a[0,23) b[23,30)"},
		{"memory caps the fast peer", []Peer{peer("a", uint64(0.2*gb), 100, ms), peer("b", gb/2, 10, ms)},
			Request{}, "a[0,10) b[10,30)"},
		{"fewest, fastest peers", []Peer{peer("a", half, 50, ms), peer("b", half, 50, ms),
			peer("slow", half, 1, ms), peer("far", half, 50, 90*ms)}, Request{}, "a[0,15) b[15,30)"},
		{"fixed stages split a model that fits", []Peer{peer("a", gb, 20, ms), peer("b", gb, 20, 2*ms)},
			Request{Stages: 2}, "a[0,15) b[15,30)"},
		{"busy peer skipped", []Peer{with(peer("a", gb, 90, ms), func(p *Peer) { p.ActiveSessions = 1 }),
			peer("b", gb, 20, ms)}, Request{}, "b[0,30)"},
		{"max sessions above one", []Peer{with(peer("a", gb, 90, ms), func(p *Peer) { p.ActiveSessions, p.MaxSessions = 1, 2 }),
			peer("b", gb, 20, ms)}, Request{}, "a[0,30)"},
		{"untrusted peer skipped", []Peer{with(peer("a", gb, 90, ms), func(p *Peer) { p.Trusted = false }),
			peer("b", gb, 20, ms)}, Request{TrustedOnly: true}, "b[0,30)"},
		{"requester trusted", []Peer{with(peer("me", gb, 90, 0), func(p *Peer) { p.Trusted, p.Requester = false, true }),
			peer("b", gb, 20, ms)}, Request{TrustedOnly: true}, "me[0,30)"},
		{"expensive peer skipped", []Peer{with(peer("a", gb, 90, ms), func(p *Peer) { p.PricePer1kMicros = 2000 }),
			peer("b", gb, 20, ms)}, Request{MaxPricePer1kMicros: 1000}, "b[0,30)"},
		{"requester pays nothing", []Peer{with(peer("me", gb, 90, ms), func(p *Peer) { p.PricePer1kMicros, p.Requester = 9000, true })},
			Request{MaxPricePer1kMicros: 1000}, "me[0,30)"},
		{"latency limit picks a lower-ranked plan", []Peer{peer("wan", gb, 100, 10*ms),
			with(peer("lan", gb, 100, 11*ms), func(p *Peer) { p.LAN = true })},
			Request{MaxTokenLatency: 20*ms + 500*time.Microsecond}, "wan[0,30)"},
		{"latency limit forces a split", []Peer{peer("slow", gb, 10, ms), peer("a", half, 100, ms), peer("b", half, 100, ms)},
			Request{MaxTokenLatency: 50 * ms}, "a[0,15) b[15,30)"},
		{"unmeasured RTT is pessimistic", []Peer{peer("a", gb, 20, 0), peer("b", gb, 15, 100*ms)}, Request{}, "b[0,30)"},
		{"unmeasured speed is pessimistic", []Peer{peer("a", gb, 0, ms), peer("b", gb, 2, 100*ms)}, Request{}, "b[0,30)"},
		{"disjoint ranges", []Peer{peer("hi", gb, 20, ms, smol(LayerRange{15, 30})), peer("lo", gb, 20, ms, smol(LayerRange{0, 15}))},
			Request{}, "lo[0,15) hi[15,30)"},
		{"a partial peer in the middle", []Peer{peer("x", uint64(0.3*gb), 20, ms), peer("y", uint64(0.3*gb), 20, ms),
			peer("mid", gb, 20, ms, smol(LayerRange{5, 15}))}, Request{Stages: 3}, "x[0,5) mid[5,15) y[15,30)"},
		{"unknown size: memory unchecked", []Peer{peer("a", 0, 20, ms, Model{ID: smolID, NumLayers: 30})}, Request{}, "a[0,30)"},
		{"pinned weights", []Peer{peer("a", gb, 90, ms, Model{ID: smolID, WeightsCID: "other", NumLayers: 30, WeightsBytes: 1}),
			peer("b", gb, 20, ms)}, Request{WeightsCID: smolCID}, "b[0,30)"},
		{"best of two weight groups", []Peer{peer("a", gb, 90, ms, Model{ID: smolID, WeightsCID: "other", NumLayers: 30, WeightsBytes: 1}),
			peer("b", gb, 20, ms), peer("c", gb, 20, ms)}, Request{}, "a[0,30)"},
		{"model named by CID", []Peer{peer("a", gb, 20, ms)}, Request{Model: smolCID}, "a[0,30)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Model == "" {
				tc.req.Model = smolID
			}
			p, err := Choose(tc.peers, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p); got != tc.want {
				t.Fatalf("plan %s, want %s (%v)", got, tc.want, p.ExpectedTokenLatency)
			}
			if p.WeightsBytes > 0 || tc.req.WeightsCID != "" {
				checkPlan(t, tc.peers, tc.req, p)
			}
		})
	}
}

func TestChooseErrors(t *testing.T) {
	small := uint64(0.2 * gb)
	tests := []struct {
		name  string
		peers []Peer
		req   Request
		want  error
		msg   string
	}{
		{"no model", []Peer{peer("a", gb, 1, ms)}, Request{Model: ""}, ErrInvalidRequest, "no model named"},
		{"negative stages", []Peer{peer("a", gb, 1, ms)}, Request{Stages: -1}, ErrInvalidRequest, "--stages -1"},
		{"negative latency", []Peer{peer("a", gb, 1, ms)}, Request{MaxTokenLatency: -ms}, ErrInvalidRequest, "negative"},
		{"peer twice", []Peer{peer("a", gb, 1, ms), peer("a", gb, 1, ms)}, Request{}, ErrInvalidRequest, "peer a listed twice"},
		{"two requesters", []Peer{with(peer("a", gb, 1, ms), func(p *Peer) { p.Requester = true }),
			with(peer("b", gb, 1, ms), func(p *Peer) { p.Requester = true })}, Request{}, ErrInvalidRequest, "2 peers marked"},
		{"nobody serves it", []Peer{peer("a", gb, 1, ms, Model{ID: "other", NumLayers: 2})}, Request{},
			ErrNoProvider, "no peer in the swarm serves smollm2-135m"},
		{"empty swarm", nil, Request{}, ErrNoProvider, "no peer in the swarm serves smollm2-135m"},
		{"unknown layer count", []Peer{peer("a", gb, 1, ms, Model{ID: smolID})}, Request{},
			ErrNoProvider, "1 list it without one"},
		{"pinned weights nobody has", []Peer{peer("a", gb, 1, ms)}, Request{WeightsCID: "bafk-x"},
			ErrNoProvider, "serves smollm2-135m (weights bafk-x)"},
		{"layer nobody holds", []Peer{peer("a", gb, 1, ms, smol(LayerRange{0, 15})), peer("b", gb, 1, ms, smol(LayerRange{16, 30}))},
			Request{}, ErrNoProvider, "holds layer 15"},
		{"not enough memory", []Peer{peer("a", small, 1, ms), peer("b", small, 1, ms)}, Request{},
			ErrInsufficientMemory, "the swarm has 0.4 GB free for smollm2-135m needing 0.6 GB"},
		{"memory in crumbs", []Peer{peer("a", gb/10, 1, ms), peer("b", gb/10, 1, ms), peer("c", gb/10, 1, ms)},
			Request{Model: "tiny"}, ErrInsufficientMemory, "0.3 GB free for tiny needing 0.2 GB (in pieces too small: they hold 3 of its 4 layers)"},
		{"more stages than peers", []Peer{peer("a", gb, 1, ms), peer("b", gb, 1, ms)}, Request{Stages: 5},
			ErrTooManyStages, "--stages 5 but only 2 peers serve smollm2-135m"},
		{"more stages than layers", []Peer{peer("a", gb, 1, ms, Model{ID: "tiny", NumLayers: 1}),
			peer("b", gb, 1, ms, Model{ID: "tiny", NumLayers: 1})}, Request{Model: "tiny", Stages: 2},
			ErrTooManyStages, "tiny has only 1 layers"},
		{"more stages than eligible peers", []Peer{peer("a", gb, 1, ms), with(peer("b", gb, 1, ms), func(p *Peer) { p.Trusted = false })},
			Request{Stages: 2, TrustedOnly: true}, ErrTooManyStages, "only 1 of the 2 peers"},
		{"all busy", []Peer{with(peer("a", gb, 1, ms), func(p *Peer) { p.ActiveSessions = 1 })}, Request{},
			ErrBusy, "all 1 peers serving smollm2-135m are at their session limit"},
		{"none trusted", []Peer{with(peer("a", gb, 1, ms), func(p *Peer) { p.Trusted = false })}, Request{TrustedOnly: true},
			ErrNoTrustedPeer, "none of the 1 available peers"},
		{"all too expensive", []Peer{with(peer("a", gb, 1, ms), func(p *Peer) { p.PricePer1kMicros = 2500 }),
			with(peer("b", gb, 1, ms), func(p *Peer) { p.PricePer1kMicros = 2000 })}, Request{MaxPricePer1kMicros: 1500},
			ErrNoPeerWithinPrice, "asks 0.002 credits per 1k tokens, the limit is 0.0015"},
		{"too slow", []Peer{peer("a", gb, 10, 20*ms)}, Request{MaxTokenLatency: 50 * ms},
			ErrLatencyLimit, "needs 120ms per token, the limit is 50ms"},
		{"no single peer holds it", []Peer{peer("a", small, 1, ms), peer("b", gb/2, 1, ms)}, Request{Stages: 1},
			ErrInsufficientMemory, "no single peer"},
		{"too little memory in that many peers", []Peer{peer("a", small, 1, ms), peer("b", small, 1, ms), peer("c", small, 1, ms)},
			Request{Stages: 2}, ErrInsufficientMemory, "the 2 peers with the most free memory hold only 20 of the 30 layers"},
		{"no chain of that length through the ranges", []Peer{peer("a", gb, 1, ms, smol(LayerRange{0, 10})),
			peer("b", gb, 1, ms, smol(LayerRange{10, 20})), peer("c", gb, 1, ms, smol(LayerRange{20, 30}))},
			Request{Stages: 2}, ErrNoChain, "no 2 of the 3 eligible peers"},
		{"no chain through the ranges", []Peer{peer("a", gb, 1, ms, smol(LayerRange{0, 20})),
			peer("b", uint64(0.1*gb), 1, ms, smol(LayerRange{10, 30})), peer("c", gb, 1, ms, smol(LayerRange{0, 10}))},
			Request{}, ErrNoChain, "no chain of the 3 eligible peers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Model == "" && tc.name != "no model" {
				tc.req.Model = smolID
			}
			if tc.req.Model == "tiny" { // 4 layers of 0.055 GB with overhead
				for i := range tc.peers {
					if len(tc.peers[i].Models) == 1 && tc.peers[i].Models[0].ID == smolID {
						tc.peers[i].Models = []Model{{ID: "tiny", NumLayers: 4, WeightsBytes: 0.2 * gb}}
					}
				}
			}
			p, err := Choose(tc.peers, tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v (plan %s)", err, tc.want, ids(p))
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}
