package planner

import (
	"crypto/rand"
	"reflect"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	lpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/p2p"
)

func TestPeerFromRecord(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := lpeer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	rec := &p2p.Record{PeerID: id, Capabilities: p2p.Capabilities{
		MemoryFreeBytes: 4 << 30, PrefillTokensPerS: 500, DecodeTokensPerS: 40,
		ActiveSessions: 1, MaxSessions: 4, PricePer1kMicros: 1500, Region: "lab",
		Models: []p2p.Model{{ID: smolID, WeightsCID: smolCID, NumLayers: 30, WeightsBytes: smolBytes,
			LayerRanges: []p2p.LayerRange{{Start: 0, End: 30}}}},
	}}
	got := PeerFromRecord(rec, Observation{RTT: 3 * time.Millisecond, LAN: true, Trusted: true})
	want := Peer{ID: id.String(), MemoryFreeBytes: 4 << 30, PrefillTokensPerS: 500, DecodeTokensPerS: 40,
		ActiveSessions: 1, MaxSessions: 4, PricePer1kMicros: 1500, Region: "lab",
		RTT: 3 * time.Millisecond, LAN: true, Trusted: true,
		Models: []Model{smol(LayerRange{0, 30})}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PeerFromRecord:\n got %+v\nwant %+v", got, want)
	}
	if p, err := Choose([]Peer{got}, Request{Model: smolID}); err != nil || p.Stages[0].PeerID != id.String() {
		t.Fatalf("plan over the adapted record: %+v, %v", p, err)
	}
}
