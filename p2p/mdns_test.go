package p2p

import (
	"os"
	"testing"
	"time"
)

// TestMDNSFindsMembersWithoutBootstrap: two members with no bootstrap peer
// find each other on the LAN. mDNS multicasts on the machine's interfaces;
// set EDGELLM_SKIP_MDNS=1 where multicast is not allowed.
func TestMDNSFindsMembersWithoutBootstrap(t *testing.T) {
	if testing.Short() || os.Getenv("EDGELLM_SKIP_MDNS") != "" {
		t.Skip("mDNS test skipped")
	}
	s := newSecret(t)
	worker := newTestNode(t, WithSecret(s), WithMDNS(true), WithRecordTiming(time.Second, 3*time.Second),
		WithCapabilitySource(StaticSource(sampleCaps("m"))))
	client := newTestNode(t, WithSecret(s), WithMDNS(true))
	// A node of another swarm on the same LAN sees nobody.
	stranger := newTestNode(t, WithSecret(newSecret(t)), WithMDNS(true))
	ctx := testContext(t, 60*time.Second)
	eventually(t, 30*time.Second, "mDNS to find the worker", func() bool {
		ps, _ := client.Lookup(ctx, "m")
		return len(ps) == 1 && ps[0].Record.PeerID == worker.ID() && ps[0].RTT > 0
	})
	if len(stranger.Host().Network().Peers()) != 0 {
		t.Fatal("a node of another swarm connected")
	}
}
