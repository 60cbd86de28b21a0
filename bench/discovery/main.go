// Command discovery measures how long a node joining an EdgeLLM swarm takes
// to see every provider of a model: a loopback swarm of -nodes workers is
// built one join at a time; each joining worker is timed from its start (New)
// to its first Lookup that lists every worker live at that moment, itself
// included. It prints one JSON object on stdout:
//
//	{"discovery_p95_s": {"value": p95, "unit": "s", "median": m, "baseline": null, "ratio": null, "nodes": N}}
//
// Progress goes to stderr. All traffic stays on 127.0.0.1 (TCP, no mDNS).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
)

func main() {
	nodes := flag.Int("nodes", 30, "swarm size (at least 2)")
	joinTimeout := flag.Duration("join-timeout", 60*time.Second, "longest wait for one joiner to see everyone")
	flag.Parse()
	if err := run(*nodes, *joinTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "discovery bench:", err)
		os.Exit(1)
	}
}

type metric struct {
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Median   float64  `json:"median"`
	Baseline *float64 `json:"baseline"`
	Ratio    *float64 `json:"ratio"`
	Nodes    int      `json:"nodes"`
}

func run(n int, joinTimeout time.Duration) error {
	if n < 2 {
		return errors.New("-nodes must be at least 2")
	}
	secret, err := p2p.NewSecret()
	if err != nil {
		return err
	}
	var swarm []*p2p.Node
	defer func() {
		for _, nd := range swarm {
			nd.Close()
		}
	}()
	caps := p2p.StaticSource(p2p.Capabilities{Device: "cpu", MaxSessions: 1,
		Models: []p2p.Model{{ID: "bench-model", WeightsCID: "bafkbench", NumLayers: 30}}})
	var samples []float64
	for i := 0; i < n; i++ {
		opts := []p2p.Option{
			p2p.WithSecret(secret), p2p.WithMDNS(false), p2p.WithCapabilitySource(caps),
			p2p.WithListenAddrs(ma.StringCast("/ip4/127.0.0.1/tcp/0")),
			p2p.WithRecordTiming(10*time.Second, 30*time.Second),
		}
		if i > 0 {
			// Join through one random earlier member, as a join string would.
			opts = append(opts, p2p.WithBootstrap(swarm[rand.IntN(len(swarm))].AddrInfo()))
		}
		start := time.Now()
		nd, err := newNode(opts)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		swarm = append(swarm, nd)
		want := map[peer.ID]bool{}
		for _, m := range swarm {
			want[m.ID()] = true
		}
		took, err := waitForAll(nd, want, start, joinTimeout)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
		if i > 0 {
			samples = append(samples, took.Seconds())
		}
		fmt.Fprintf(os.Stderr, "node %2d saw all %2d providers in %.3fs\n", i, len(want), took.Seconds())
	}
	sort.Float64s(samples)
	out := map[string]metric{"discovery_p95_s": {
		Value: quantile(samples, 0.95), Unit: "s", Median: quantile(samples, 0.5), Nodes: n,
	}}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// newNode starts a worker with a fresh in-memory identity.
func newNode(opts []p2p.Option) (*p2p.Node, error) {
	key, err := p2p.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	return p2p.New(append(opts, p2p.WithIdentity(key))...)
}

// waitForAll polls Lookup until it lists every peer in want.
func waitForAll(nd *p2p.Node, want map[peer.ID]bool, start time.Time, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(timeout))
	defer cancel()
	for {
		ps, _ := nd.Lookup(ctx, "bench-model")
		seen := 0
		for _, p := range ps {
			if want[p.Record.PeerID] {
				seen++
			}
		}
		if seen == len(want) {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("saw %d of %d providers before the timeout", seen, len(want))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// quantile of sorted xs by linear interpolation.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	pos := q * float64(len(xs)-1)
	lo := int(pos)
	if lo+1 >= len(xs) {
		return xs[len(xs)-1]
	}
	return xs[lo] + (pos-float64(lo))*(xs[lo+1]-xs[lo])
}
