package planner

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func pdPeer(id string, free uint64, cid string) Peer {
	m := Model{ID: smolID, WeightsCID: cid, NumLayers: 30, WeightsBytes: 100 << 20}
	return Peer{ID: id, Models: []Model{m}, MemoryFreeBytes: free, DecodeTokensPerS: 50, MaxSessions: 1,
		RTT: time.Millisecond, PricePer1kMicros: 7}
}

// TestChoosePD: the two-stage plan over the named peers (prefill first,
// both whole-model), and each refusal with its sentinel and wording.
func TestChoosePD(t *testing.T) {
	a, b, c := pdPeer("A", 8<<30, "bafkaaa"), pdPeer("B", 8<<30, "bafkaaa"), pdPeer("C", 8<<30, "bafkaaa")
	busy := pdPeer("A", 8<<30, "bafkaaa")
	busy.ActiveSessions = 1
	small := pdPeer("B", 1<<20, "bafkaaa")
	other := pdPeer("B", 8<<30, "bafkbbb")
	tests := []struct {
		name            string
		peers           []Peer
		req             Request
		prefill, decode string
		want            error  // nil: planned
		wantText        string // in the error
	}{
		{"B then A", []Peer{a, b, c}, Request{Model: smolID}, "B", "A", nil, ""},
		{"one stage asked", []Peer{a, b}, Request{Model: smolID, Stages: 1}, "A", "B", nil, ""},
		{"two stages asked", []Peer{a, b}, Request{Model: smolID, Stages: 2}, "A", "B", ErrInvalidRequest, "each role runs every layer"},
		{"same peer", []Peer{a, b}, Request{Model: smolID}, "A", "A", ErrInvalidRequest, "must differ"},
		{"unknown decode peer", []Peer{a, b, c}, Request{Model: smolID}, "A", "Z", ErrUnknownPeer, "decode peer Z is not among the 3 peers"},
		{"unknown prefill peer", []Peer{a, b}, Request{Model: smolID}, "Z", "A", ErrUnknownPeer, "prefill peer Z is not among the 2 peers"},
		{"model not served", []Peer{a, b}, Request{Model: "other"}, "A", "B", ErrNoProvider, "prefill peer A cannot run other"},
		{"busy prefill peer", []Peer{busy, b}, Request{Model: smolID}, "A", "B", ErrBusy, "prefill peer A cannot run"},
		{"decode peer too small", []Peer{a, small}, Request{Model: smolID}, "A", "B", ErrInsufficientMemory, "decode peer B cannot run"},
		{"different weights", []Peer{a, other}, Request{Model: smolID}, "A", "B", ErrDifferentWeights, "(bafkaaa, bafkbbb)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan, err := ChoosePD(tt.peers, tt.req, tt.prefill, tt.decode)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("ChoosePD: %v; want %v with %q", err, tt.want, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Stages) != 2 || plan.Stages[0].PeerID != tt.prefill || plan.Stages[1].PeerID != tt.decode {
				t.Fatalf("stages %+v; want %s then %s", plan.Stages, tt.prefill, tt.decode)
			}
			for _, s := range plan.Stages {
				if s.Start != 0 || s.End != 30 {
					t.Errorf("stage %+v; want [0,30)", s)
				}
			}
			d := plan.Stages[1]
			if plan.WeightsCID != "bafkaaa" || plan.NumLayers != 30 || plan.ExpectedTokenLatency != d.RTT+d.Compute ||
				plan.PricePer1kMicros != plan.Stages[0].Price+d.Price {
				t.Errorf("plan %+v; want the decode stage's latency and both prices", plan)
			}
		})
	}
}
