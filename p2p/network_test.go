package p2p

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	testRefresh = time.Second
	testTTL     = 3 * time.Second
)

// startSwarm starts n workers serving model "m" in one private swarm on
// loopback, all bootstrapping from the first.
func startSwarm(t *testing.T, n int) []*Node {
	t.Helper()
	s := newSecret(t)
	opts := func(i int) []Option {
		return []Option{WithSecret(s), WithRecordTiming(testRefresh, testTTL),
			WithCapabilitySource(StaticSource(sampleCaps("m", fmt.Sprintf("only-%d", i))))}
	}
	nodes := []*Node{newTestNode(t, opts(0)...)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, newTestNode(t, append(opts(i), WithBootstrap(nodes[0].AddrInfo()))...))
	}
	return nodes
}

func ids(ps []PeerInfo) map[peer.ID]bool {
	m := map[peer.ID]bool{}
	for _, p := range ps {
		m[p.Record.PeerID] = true
	}
	return m
}

// lookupAll runs Lookup(model) on every node concurrently.
func lookupAll(ctx context.Context, nodes []*Node, model string) []map[peer.ID]bool {
	out := make([]map[peer.ID]bool, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ps, _ := n.Lookup(ctx, model)
			out[i] = ids(ps)
		}()
	}
	wg.Wait()
	return out
}

// TestSwarmOfTen: ten real nodes on loopback; every node finds every
// provider; records refresh; a graceful leave is seen at once; a killed node
// drops out once its record expires.
func TestSwarmOfTen(t *testing.T) {
	if testing.Short() {
		t.Skip("network test")
	}
	nodes := startSwarm(t, 10)
	ctx := testContext(t, 90*time.Second)

	want := func(ns []*Node) map[peer.ID]bool {
		m := map[peer.ID]bool{}
		for _, n := range ns {
			m[n.ID()] = true
		}
		return m
	}
	all := want(nodes)
	eventually(t, 30*time.Second, "every node to find all 10 providers", func() bool {
		for _, seen := range lookupAll(ctx, nodes, "m") {
			if len(seen) != len(all) {
				return false
			}
		}
		return true
	})
	// A model only one node serves is found by id, by everyone.
	for _, n := range nodes {
		ps, _ := n.Lookup(ctx, "only-3")
		if len(ps) != 1 || ps[0].Record.PeerID != nodes[3].ID() {
			t.Fatalf("lookup of only-3 from %s: %d peers", n.ID(), len(ps))
		}
	}

	// Records refresh: the DHT copy of node 3's record gets newer sequence
	// numbers and a later expiry.
	first, _, err := nodes[7].FetchRecord(ctx, nodes[3].ID())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*testRefresh, "node 3's record to refresh in the DHT", func() bool {
		env, err := nodes[7].disc.GetRecord(ctx, nodes[3].ID())
		if err != nil {
			return false
		}
		rec, err := OpenRecord(env)
		return err == nil && rec.Seq > first.Seq && rec.Expires.After(first.Expires)
	})

	// Graceful leave: node 9 withdraws; every other node's next lookup, started
	// within a refresh period, no longer lists it.
	leaver := nodes[9]
	left := time.Now()
	if err := leaver.Close(); err != nil {
		t.Fatalf("leave: %v", err)
	}
	rest := nodes[:9]
	for i, seen := range lookupAll(ctx, rest, "m") {
		if seen[leaver.ID()] {
			t.Fatalf("node %d still lists the node that left", i)
		}
	}
	if took := time.Since(left); took > testRefresh+5*time.Second {
		t.Logf("leave seen after %s", took)
	}

	// Crash: node 8 stops without withdrawing. It disappears once its record
	// expires (within testTTL of its last refresh), never before a lookup
	// falls back to the DHT copy.
	victim := nodes[8]
	if err := victim.shutdown(); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	survivors := nodes[:8]
	eventually(t, testTTL+20*time.Second, "every survivor to drop the crashed node", func() bool {
		for _, seen := range lookupAll(ctx, survivors, "m") {
			if seen[victim.ID()] || len(seen) != len(survivors) {
				return false
			}
		}
		return true
	})
	t.Logf("crashed node dropped after %s (TTL %s)", time.Since(crashed).Round(time.Millisecond), testTTL)
}
