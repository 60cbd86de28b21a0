package p2p

import (
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/internal/planner"
)

// TestPlannerPeer: a record and an observation become the planner's peer,
// field for field, and the planner can plan over it.
func TestPlannerPeer(t *testing.T) {
	id, err := peer.IDFromPrivateKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	const cid, bytes = "bafk-smol", 545_454_545
	rec := &Record{PeerID: id, Capabilities: Capabilities{
		MemoryFreeBytes: 4 << 30, PrefillTokensPerS: 500, DecodeTokensPerS: 40,
		ActiveSessions: 1, MaxSessions: 4, PricePer1kMicros: 1500, Region: "lab",
		Models: []Model{{ID: "smollm2-135m", WeightsCID: cid, NumLayers: 30, WeightsBytes: bytes,
			LayerRanges: []LayerRange{{Start: 0, End: 30}}}},
	}}
	tests := []struct {
		name string
		obs  Observation
	}{
		{"measured on the LAN, trusted", Observation{RTT: 3 * time.Millisecond, LAN: true, Trusted: true}},
		{"not measured", Observation{}},
		{"the requester", Observation{Requester: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PlannerPeer(rec, tt.obs)
			want := planner.Peer{ID: id.String(), MemoryFreeBytes: 4 << 30, PrefillTokensPerS: 500, DecodeTokensPerS: 40,
				ActiveSessions: 1, MaxSessions: 4, PricePer1kMicros: 1500, Region: "lab",
				RTT: tt.obs.RTT, LAN: tt.obs.LAN, Trusted: tt.obs.Trusted, Requester: tt.obs.Requester,
				Models: []planner.Model{{ID: "smollm2-135m", WeightsCID: cid, NumLayers: 30, WeightsBytes: bytes,
					LayerRanges: []planner.LayerRange{{Start: 0, End: 30}}}}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("PlannerPeer:\n got %+v\nwant %+v", got, want)
			}
			if p, err := planner.Choose([]planner.Peer{got}, planner.Request{Model: "smollm2-135m"}); err != nil || p.Stages[0].PeerID != id.String() {
				t.Fatalf("plan over the converted record: %+v, %v", p, err)
			}
		})
	}
}

// TestPlannerPeerClampsClaims (lying capability records): absurd claims
// reach the planner clamped to plausible ranges.
func TestPlannerPeerClampsClaims(t *testing.T) {
	tests := []struct {
		name string
		caps Capabilities
		want func(planner.Peer) bool
	}{
		{"absurd speeds", Capabilities{PrefillTokensPerS: 1e300, DecodeTokensPerS: 1e300},
			func(p planner.Peer) bool {
				return p.PrefillTokensPerS == maxPlausiblePrefill && p.DecodeTokensPerS == maxPlausibleDecode
			}},
		{"more free memory than any machine", Capabilities{MemoryFreeBytes: 1 << 62},
			func(p planner.Peer) bool { return p.MemoryFreeBytes == maxPlausibleMemory }},
		{"more free memory than its total", Capabilities{MemoryFreeBytes: 8 << 30, MemoryTotalBytes: 4 << 30},
			func(p planner.Peer) bool { return p.MemoryFreeBytes == 4<<30 }},
		{"sessions", Capabilities{MaxSessions: 1 << 30, ActiveSessions: 1 << 31},
			func(p planner.Peer) bool {
				return p.MaxSessions == maxPlausibleSessions && p.ActiveSessions == maxPlausibleSessions
			}},
		{"honest claims pass as they are", Capabilities{PrefillTokensPerS: 900, DecodeTokensPerS: 60, MemoryFreeBytes: 2 << 30, MemoryTotalBytes: 8 << 30, MaxSessions: 2, ActiveSessions: 1},
			func(p planner.Peer) bool {
				return p.PrefillTokensPerS == 900 && p.DecodeTokensPerS == 60 && p.MemoryFreeBytes == 2<<30 && p.MaxSessions == 2 && p.ActiveSessions == 1
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PlannerPeer(&Record{Capabilities: tt.caps}, Observation{}); !tt.want(got) {
				t.Fatalf("PlannerPeer = %+v", got)
			}
		})
	}
}
