package p2p

import (
	"os"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/testutil"
)

// TestMDNSFindsMembersWithoutBootstrap: two members with no bootstrap peer
// find each other on the LAN. mDNS multicasts on every multicast interface it
// sees, so the test re-executes itself inside a network namespace of its own
// whose only interface is loopback; it skips where no namespace can be made
// (needs root and iproute2) or when EDGELLM_SKIP_MDNS is set.
func TestMDNSFindsMembersWithoutBootstrap(t *testing.T) {
	if testing.Short() || os.Getenv("EDGELLM_SKIP_MDNS") != "" {
		t.Skip("mDNS test skipped")
	}
	if !testutil.InNetNS(t) {
		ns := testutil.NewNetNS(t)
		testutil.RunTestInNetNS(t, ns, "TestMDNSFindsMembersWithoutBootstrap", 2*time.Minute)
		return
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
