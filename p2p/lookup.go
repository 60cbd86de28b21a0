package p2p

import (
	"context"
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
