package p2p

import (
	"context"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// lookupParallelism bounds the record fetches of one Lookup.
const lookupParallelism = 16

// PeerInfo is a member found by Lookup: its verified record and how it was
// reached.
type PeerInfo struct {
	Record *Record
	// Direct: the record came fresh over CapsProtocol (else from the DHT).
	Direct bool
	// RTT measured with libp2p ping; 0 when the peer did not answer.
	RTT time.Duration
}

// Lookup finds the live workers serving model (a short id or a weights CID),
// or every live worker when model is "". It collects the DHT providers of the
// model's key, reads each provider's record (fresh when possible), drops
// withdrawn, expired and non-matching ones, and pings the reachable ones.
// The result is sorted by RTT (unmeasured last), then peer id.
func (n *Node) Lookup(ctx context.Context, model string) ([]PeerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.LookupTimeout)
	defer cancel()
	key := MembersKey
	if model != "" {
		key = LookupKey(model)
	}
	seen := map[peer.ID]bool{}
	var (
		mu    sync.Mutex
		out   []PeerInfo
		wg    sync.WaitGroup
		slots = make(chan struct{}, lookupParallelism)
	)
	for ai := range n.disc.FindProviders(ctx, key) {
		if seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			info, ok := n.inspect(ctx, ai.ID, model)
			if ok {
				mu.Lock()
				out = append(out, info)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sortPeers(out)
	return out, ctx.Err()
}

// LookupSettled repeats Lookup until two consecutive non-empty rounds list
// the same peers, or ctx ends; it returns the last non-empty round (nil when
// none found any). A round is the DHT's view at that moment, so one round
// right after joining can miss members the next finds.
func (n *Node) LookupSettled(ctx context.Context, model string) []PeerInfo {
	var last []PeerInfo
	for ctx.Err() == nil {
		// Until a member is connected the DHT has nobody to ask.
		if len(n.host.Network().Peers()) == 0 {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		ps, _ := n.Lookup(ctx, model)
		if len(ps) > 0 && len(last) > 0 && sameIDs(ps, last) {
			return ps
		}
		if len(ps) > 0 {
			last = ps
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	return last
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func sameIDs(a, b []PeerInfo) bool {
	set := func(ps []PeerInfo) map[peer.ID]bool {
		m := map[peer.ID]bool{}
		for _, p := range ps {
			m[p.Record.PeerID] = true
		}
		return m
	}
	return maps.Equal(set(a), set(b))
}

func (n *Node) inspect(ctx context.Context, p peer.ID, model string) (PeerInfo, bool) {
	rec, direct, err := n.FetchRecord(ctx, p)
	if err != nil {
		n.log.Debug("lookup: no usable record", "peer", p, "err", err)
		return PeerInfo{}, false
	}
	if !rec.Live(time.Now()) || (model != "" && !rec.Serves(model)) {
		return PeerInfo{}, false
	}
	info := PeerInfo{Record: rec, Direct: direct}
	if direct && p != n.host.ID() {
		pctx, cancel := context.WithTimeout(ctx, n.cfg.FetchTimeout)
		defer cancel()
		if rtt, err := measureRTT(pctx, n.host, p); err == nil {
			info.RTT = rtt
		}
	}
	return info, true
}

func sortPeers(ps []PeerInfo) {
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i].RTT, ps[j].RTT
		if (a == 0) != (b == 0) {
			return b == 0
		}
		if a != b {
			return a < b
		}
		return ps[i].Record.PeerID < ps[j].Record.PeerID
	})
}
