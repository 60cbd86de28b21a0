package p2p

import (
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func TestReachableIPv4(t *testing.T) {
	tests := []struct {
		name  string
		addrs []string
		want  string
	}{
		{"none", nil, "127.0.0.1"},
		{"loopback and unspecified only", []string{"/ip4/127.0.0.1/tcp/1", "/ip4/0.0.0.0/tcp/2"}, "127.0.0.1"},
		{"IPv6 only", []string{"/ip6/2001:db8::1/tcp/1"}, "127.0.0.1"},
		{"first routable IPv4", []string{"/ip4/127.0.0.1/tcp/1", "/ip6/::1/tcp/1", "/ip4/10.0.0.5/tcp/1", "/ip4/192.168.1.2/tcp/1"}, "10.0.0.5"},
		{"not an IP", []string{"/dns4/example.com/tcp/1", "/ip4/192.168.1.2/tcp/1"}, "192.168.1.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addrs []ma.Multiaddr
			for _, s := range tt.addrs {
				addrs = append(addrs, ma.StringCast(s))
			}
			if got := ReachableIPv4(addrs); got != tt.want {
				t.Errorf("ReachableIPv4(%v) = %s, want %s", tt.addrs, got, tt.want)
			}
		})
	}
}

// TestLookupSettled: a member that just joined sees the swarm's workers once
// two rounds agree, and a connection over loopback counts as on the LAN.
func TestLookupSettled(t *testing.T) {
	secret := newSecret(t)
	a := newTestNode(t, WithSecret(secret), WithCapabilitySource(StaticSource(sampleCaps("m"))),
		WithRecordTiming(time.Second, 3*time.Second))
	b := newTestNode(t, WithSecret(secret), WithCapabilitySource(StaticSource(sampleCaps("m"))),
		WithRecordTiming(time.Second, 3*time.Second), WithBootstrap(a.AddrInfo()))
	member := newTestNode(t, WithSecret(secret), WithBootstrap(a.AddrInfo()))
	var got []PeerInfo
	eventually(t, 25*time.Second, "both workers in one settled lookup", func() bool {
		got = member.LookupSettled(testContext(t, 5*time.Second), "m")
		return len(got) == 2
	})
	ids := map[string]bool{got[0].Record.PeerID.String(): true, got[1].Record.PeerID.String(): true}
	if !ids[a.ID().String()] || !ids[b.ID().String()] {
		t.Fatalf("settled on %v; want %s and %s", ids, a.ID(), b.ID())
	}
	if !member.OnLAN(a.ID()) {
		t.Error("a loopback connection is not on the LAN")
	}
	if member.LookupSettled(testContext(t, 2*time.Second), "other") != nil {
		t.Error("a model nobody serves settled on some peers")
	}
}
