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
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
	if err != nil {
		return nil, fmt.Errorf("resource manager: %w", err)
	}
	return rm, nil
}
