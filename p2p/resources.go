package p2p

import (
	"fmt"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// newResourceManager builds the resource manager: libp2p's default limits,
// auto-scaled to this machine's memory and file descriptors, plus the bundled
// services' limits and a small budget for the caps service. Loopback
// connections are not limited per IP (rcmgr's default).
func newResourceManager() (network.ResourceManager, error) {
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits()))
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}

// Per-peer inbound stream limits of edgellm's own services: what one member
// may hold open at a worker at once.
const (
	// maxClusterStreamsPerPeer caps the sessions one requester holds at a
	// worker (a session is one stream for its whole life), whatever the
	// worker's --max-sessions: one requester cannot take every slot of a
	// large worker.
	maxClusterStreamsPerPeer = 4
	// maxKVStreamsPerPeer caps one member's manifest requests in flight.
	maxKVStreamsPerPeer = 2
)

// resourceLimits are libp2p's defaults scaled to this machine, plus limits
// for the caps, cluster and KV services (hardening: a member that opens
// streams without end exhausts a service's budget, not the node's).
func resourceLimits() rcmgr.ConcreteLimitConfig {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	// A caps exchange is one small request and one record; a peer has no
	// reason to hold more than a few at once.
	limits.AddServiceLimit(CapsServiceName,
		rcmgr.BaseLimit{StreamsInbound: 128, StreamsOutbound: 128, Streams: 256, Memory: 8 << 20},
		rcmgr.BaseLimitIncrease{})
	limits.AddServicePeerLimit(CapsServiceName,
		rcmgr.BaseLimit{StreamsInbound: 4, StreamsOutbound: 4, Streams: 8, Memory: 4 * MaxRecordSize},
		rcmgr.BaseLimitIncrease{})
	kvStream := int64(MaxKVRequestSize + MaxKVReplySize)
	limits.AddServiceLimit(KVServiceName,
		rcmgr.BaseLimit{StreamsInbound: 32, StreamsOutbound: 32, Streams: 64, Memory: 64 * kvStream},
		rcmgr.BaseLimitIncrease{})
	limits.AddServicePeerLimit(KVServiceName,
		rcmgr.BaseLimit{StreamsInbound: maxKVStreamsPerPeer, StreamsOutbound: 4, Streams: 6, Memory: 6 * kvStream},
		rcmgr.BaseLimitIncrease{})
	limits.AddServiceLimit(ClusterServiceName,
		rcmgr.BaseLimit{StreamsInbound: 256, StreamsOutbound: 256, Streams: 512, Memory: 512 * clusterStreamMemory},
		rcmgr.BaseLimitIncrease{})
	limits.AddServicePeerLimit(ClusterServiceName,
		rcmgr.BaseLimit{StreamsInbound: maxClusterStreamsPerPeer, StreamsOutbound: 64, Streams: 68, Memory: 68 * clusterStreamMemory},
		rcmgr.BaseLimitIncrease{})
	// A pull is one stream for the pull's whole life; a worker runs one at a
	// time and refuses the others at once.
	pullStream := int64(MaxPullRequestSize + MaxPullReplySize)
	limits.AddServiceLimit(PullServiceName,
		rcmgr.BaseLimit{StreamsInbound: 16, StreamsOutbound: 16, Streams: 32, Memory: 32 * pullStream},
		rcmgr.BaseLimitIncrease{})
	limits.AddServicePeerLimit(PullServiceName,
		rcmgr.BaseLimit{StreamsInbound: maxPullStreamsPerPeer, StreamsOutbound: 2, Streams: 3, Memory: 3 * pullStream},
		rcmgr.BaseLimitIncrease{})
	return limits.AutoScale()
}
