package planner

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// group is one set of interchangeable weights: peers serving the requested
// model with the same weights CID and layer count. Stages of one plan never
// mix groups.
type group struct {
	modelID, cid string
	numLayers    int
	weightsBytes uint64 // largest size any member reports
	members      []member
}

// member is a peer serving the group's weights and the ranges it holds.
type member struct {
	peer   *Peer
	ranges []LayerRange  // clipped to [0, numLayers), never empty
	load   time.Duration // expected load before it can run (0: loaded)
}

// cand is a member that passed the filters, as the search sees it.
type cand struct {
	id             string
	rtt            time.Duration
	speed          float64 // effective decode tokens/s
	price          uint64  // 0 for the requester
	lan, requester bool
	region         string
	free           uint64
	cap            int           // most layers one stage on it can take (memory and ranges)
	memCap         int           // most layers its memory holds
	full           bool          // holds every layer in one range
	reach          []int         // reach[a]: furthest End of a range holding layer a; a if none
	bonus          time.Duration // Request.Prefer: subtracted from a chain's rank
	load           time.Duration // the member's load, spread over the answer (loadPenalty)
	loadTime       time.Duration // the member's load itself
}

// groups collects the requested model's weight groups, largest first.
func groups(peers []Peer, req Request) []*group {
	byKey := map[string]*group{}
	var out []*group
	for i := range peers {
		for _, m := range peers[i].Models {
			if !matches(m, req) {
				continue
			}
			key := fmt.Sprintf("%s\x00%s\x00%d", m.WeightsCID, m.ID, m.NumLayers)
			if m.WeightsCID != "" {
				key = fmt.Sprintf("%s\x00%d", m.WeightsCID, m.NumLayers)
			}
			g := byKey[key]
			if g == nil {
				g = &group{modelID: m.ID, cid: m.WeightsCID, numLayers: m.NumLayers}
				byKey[key] = g
				out = append(out, g)
			}
			g.add(&peers[i], m)
		}
	}
	slices.SortStableFunc(out, func(a, b *group) int {
		return cmp.Or(cmp.Compare(len(b.members), len(a.members)), cmp.Compare(a.cid, b.cid))
	})
	return out
}

func matches(m Model, req Request) bool {
	if m.NumLayers <= 0 || (req.WeightsCID != "" && m.WeightsCID != req.WeightsCID) {
		return false
	}
	return m.ID == req.Model || (m.WeightsCID != "" && m.WeightsCID == req.Model)
}

// add records p as serving the group (once, even if it lists the model twice).
func (g *group) add(p *Peer, m Model) {
	g.weightsBytes = max(g.weightsBytes, m.WeightsBytes)
	ranges := clipRanges(m.LayerRanges, g.numLayers)
	load := loadTime(m)
	for i := range g.members {
		if g.members[i].peer == p {
			g.members[i].ranges = append(g.members[i].ranges, ranges...)
			g.members[i].load = min(g.members[i].load, load)
			return
		}
	}
	g.members = append(g.members, member{peer: p, ranges: ranges, load: load})
}

// clipRanges keeps the non-empty parts of rs inside [0, n); none means all.
func clipRanges(rs []LayerRange, n int) []LayerRange {
	if len(rs) == 0 {
		return []LayerRange{{0, n}}
	}
	var out []LayerRange
	for _, r := range rs {
		r.Start, r.End = max(r.Start, 0), min(r.End, n)
		if r.Start < r.End {
			out = append(out, r)
		}
	}
	return out
}

// newCand derives what the search needs from an eligible member.
func (g *group) newCand(m member) cand {
	p := m.peer
	c := cand{
		id: p.ID, rtt: effectiveRTT(*p), speed: effectiveSpeed(p.DecodeTokensPerS),
		lan: p.LAN || p.Requester, requester: p.Requester, region: p.Region,
		free: p.MemoryFreeBytes, reach: make([]int, g.numLayers), loadTime: m.load,
	}
	if !p.Requester {
		c.price = p.PricePer1kMicros
	}
	longest := 0
	for a := range c.reach {
		c.reach[a] = a
		for _, r := range m.ranges {
			if r.Start <= a && a < r.End {
				c.reach[a] = max(c.reach[a], r.End)
			}
		}
		longest = max(longest, c.reach[a]-a)
	}
	c.full = c.reach[0] == g.numLayers
	c.memCap = layerCap(p.MemoryFreeBytes, g.weightsBytes, g.numLayers)
	c.cap = min(c.memCap, longest)
	return c
}

// fits reports whether a stage [a, e) on c respects its memory and ranges.
func (c *cand) fits(a, e int) bool {
	return e-a >= 1 && e-a <= c.cap && e <= c.reach[a]
}
