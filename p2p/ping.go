package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// pingSamples is how many round trips measureRTT takes; it keeps the fastest.
const pingSamples = 3

// measureRTT pings p with libp2p's ping protocol and returns the smallest of
// a few round-trip times.
func measureRTT(ctx context.Context, h host.Host, p peer.ID) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := ping.Ping(ctx, h, p)
	var best time.Duration
	for i := 0; i < pingSamples; i++ {
		select {
		case <-ctx.Done():
			if best > 0 {
				return best, nil
			}
			return 0, ctx.Err()
		case r := <-results:
			if r.Error != nil {
				if best > 0 {
					return best, nil
				}
				return 0, r.Error
			}
			if best == 0 || r.RTT < best {
				best = r.RTT
			}
		}
	}
	return best, nil
}
