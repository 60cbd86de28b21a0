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
