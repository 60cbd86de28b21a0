package requester

import (
	"sync"

	"github.com/edgellm/edgellm/internal/planner"
)

// measuredSpeeds are the decode speeds this requester measured itself, by
// peer id: what each worker's last completed generation achieved.
//
// Decision (hardening, lying capability records): a record's speeds are
// its peer's own claim, clamped to plausible ranges (p2p/planner_peer.go)
// but still free to lie. Once a worker has served this requester, the
// planner ranks it by the speed measured here instead of the claimed one.
// A pipeline's rate is credited to every stage of it as that peer's
// whole-model decode speed: a lower bound (it includes the other stages and
// the links), so a measured peer never looks faster than it proved to be.
// Prefill speed is left as claimed (a cached prompt makes it unmeasurable).
type measuredSpeeds struct {
	mu     sync.Mutex
	decode map[string]float64
}

// record notes rate (tokens/s, > 0) for each peer of a finished generation.
func (m *measuredSpeeds) record(peers []string, rate float64) {
	if !(rate > 0) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.decode == nil {
		m.decode = map[string]float64{}
	}
	for _, p := range peers {
		m.decode[p] = rate
	}
}

// apply replaces the claimed decode speed of every measured peer.
func (m *measuredSpeeds) apply(peers []planner.Peer) []planner.Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range peers {
		if rate, ok := m.decode[peers[i].ID]; ok {
			peers[i].DecodeTokensPerS = rate
		}
	}
	return peers
}

// stagePeers are the peer ids of the cluster's current plan.
func (c *Cluster) stagePeers() []string {
	stages := c.Plan().Stages
	out := make([]string, len(stages))
	for i, s := range stages {
		out[i] = s.PeerID
	}
	return out
}
