package p2p

import (
	"time"

	"github.com/edgellm/edgellm/internal/planner"
)

// Observation is what the requester knows about a peer beyond its record.
type Observation struct {
	RTT       time.Duration // measured ping; 0 = not measured
	LAN       bool          // e.g. found by mDNS or on a private address
	Trusted   bool          // in the user's trusted-peers list
	Requester bool          // the requester's own record
}

// PlannerPeer turns a peer's capability record and the requester's
// observation of it into the planner's input. The peer id is the record's
// peer id in its usual string form (peer.ID.String()).
//
// Decision: the conversion lives on the network side (p2p imports planner,
// never the reverse), so the planner stays a pure package that links no
// libp2p.
func PlannerPeer(rec *Record, o Observation) planner.Peer {
	p := planner.Peer{
		ID:                rec.PeerID.String(),
		MemoryFreeBytes:   rec.MemoryFreeBytes,
		PrefillTokensPerS: rec.PrefillTokensPerS,
		DecodeTokensPerS:  rec.DecodeTokensPerS,
		ActiveSessions:    int(rec.ActiveSessions),
		MaxSessions:       int(rec.MaxSessions),
		PricePer1kMicros:  rec.PricePer1kMicros,
		Region:            rec.Region,
		RTT:               o.RTT,
		LAN:               o.LAN,
		Trusted:           o.Trusted,
		Requester:         o.Requester,
	}
	for _, m := range rec.Models {
		pm := planner.Model{ID: m.ID, WeightsCID: m.WeightsCID, NumLayers: int(m.NumLayers), WeightsBytes: m.WeightsBytes}
		for _, r := range m.LayerRanges {
			pm.LayerRanges = append(pm.LayerRanges, planner.LayerRange{Start: int(r.Start), End: int(r.End)})
		}
		p.Models = append(p.Models, pm)
	}
	return p
}
