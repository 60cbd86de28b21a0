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
	c := plausible(rec.Capabilities)
	p := planner.Peer{
		ID:                rec.PeerID.String(),
		MemoryFreeBytes:   c.MemoryFreeBytes,
		PrefillTokensPerS: c.PrefillTokensPerS,
		DecodeTokensPerS:  c.DecodeTokensPerS,
		ActiveSessions:    int(c.ActiveSessions),
		MaxSessions:       int(c.MaxSessions),
		PricePer1kMicros:  rec.PricePer1kMicros,
		Region:            rec.Region,
		RTT:               o.RTT,
		LAN:               o.LAN,
		Trusted:           o.Trusted,
		Requester:         o.Requester,
	}
	for _, m := range rec.Models {
		pm := planner.Model{ID: m.ID, WeightsCID: m.WeightsCID, NumLayers: int(m.NumLayers), WeightsBytes: m.WeightsBytes,
			Unloaded: m.Unloaded, LoadTime: m.LoadTime}
		for _, r := range m.LayerRanges {
			pm.LayerRanges = append(pm.LayerRanges, planner.LayerRange{Start: int(r.Start), End: int(r.End)})
		}
		p.Models = append(p.Models, pm)
	}
	return p
}

// The most a record may claim, anything above counting as this much: far
// beyond any one machine today, low enough that the planner's arithmetic
// stays finite and a liar gains no more than a very fast honest peer.
const (
	maxPlausiblePrefill  = 1e6      // tokens/s
	maxPlausibleDecode   = 1e5      // tokens/s
	maxPlausibleMemory   = 64 << 40 // bytes
	maxPlausibleSessions = 1024
)

// plausible clamps a record's claims to plausible ranges: speeds and memory
// to the caps above, free memory to the total when the total is given,
// sessions to the cap and active sessions to the maximum.
//
// Decision (hardening, lying capability records): a record with absurd
// speeds and memory won every plan. Clamping bounds the lie; what a peer
// serves is then judged by what this requester measures.
func plausible(c Capabilities) Capabilities {
	c.PrefillTokensPerS = min(c.PrefillTokensPerS, maxPlausiblePrefill)
	c.DecodeTokensPerS = min(c.DecodeTokensPerS, maxPlausibleDecode)
	c.MemoryTotalBytes = min(c.MemoryTotalBytes, maxPlausibleMemory)
	c.MemoryFreeBytes = min(c.MemoryFreeBytes, maxPlausibleMemory)
	if c.MemoryTotalBytes > 0 {
		c.MemoryFreeBytes = min(c.MemoryFreeBytes, c.MemoryTotalBytes)
	}
	c.MaxSessions = min(c.MaxSessions, maxPlausibleSessions)
	c.ActiveSessions = min(c.ActiveSessions, max(c.MaxSessions, 1))
	return c
}
