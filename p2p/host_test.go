package p2p

import (
	"context"
	"errors"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equals(b) {
		t.Fatal("identity changed between loads")
	}
}

func TestQUICRefusedInPrivateSwarm(t *testing.T) {
	s := newSecret(t)
	_, err := NewHost(HostConfig{Identity: newKey(t), Secret: &s,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}})
	if !errors.Is(err, ErrQUICInPrivateSwarm) {
		t.Fatalf("NewHost(private, quic) = %v", err)
	}
}

func TestOpenHostsConnectOverQUIC(t *testing.T) {
	quic := ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")
	a := newTestNode(t, WithOpenSwarm(), WithListenAddrs(quic))
	b := newTestNode(t, WithOpenSwarm(), WithListenAddrs(quic))
	if err := b.Host().Connect(testContext(t, 10*time.Second), a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
}

func TestSwarmSecretGatesMembership(t *testing.T) {
	secret := newSecret(t)
	worker := newTestNode(t, WithSecret(secret), WithCapabilitySource(StaticSource(sampleCaps("m"))),
		WithRecordTiming(time.Second, 3*time.Second))
	member := newTestNode(t, WithSecret(secret), WithBootstrap(worker.AddrInfo()))
	ctx := testContext(t, 30*time.Second)

	eventually(t, 20*time.Second, "the member to see the worker", func() bool {
		ps, _ := member.Lookup(ctx, "m")
		return len(ps) == 1 && ps[0].Record.PeerID == worker.ID()
	})

	outsiders := map[string]*Node{
		"other secret": newTestNode(t, WithSecret(newSecret(t)), WithBootstrap(worker.AddrInfo())),
		"no secret":    newTestNode(t, WithOpenSwarm(), WithListenAddrs(loopback), WithBootstrap(worker.AddrInfo())),
	}
	for name, o := range outsiders {
		t.Run(name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := o.Host().Connect(cctx, worker.AddrInfo()); err == nil {
				t.Fatal("an outsider connected to a member")
			}
			if _, _, err := o.caps.Fetch(cctx, worker.ID()); err == nil {
				t.Fatal("an outsider called the caps protocol")
			}
			lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
			defer lcancel()
			if ps, _ := o.Lookup(lctx, "m"); len(ps) != 0 {
				t.Fatalf("an outsider discovered %d members", len(ps))
			}
		})
	}
	// The worker is unharmed and still serves members.
	if _, _, err := member.caps.Fetch(ctx, worker.ID()); err != nil {
		t.Fatalf("member fetch after outsider attempts: %v", err)
	}
	// No outsider holds a connection to the worker, not even a half-open one.
	for name, o := range outsiders {
		if got := worker.Host().Network().ConnsToPeer(o.ID()); len(got) != 0 {
			t.Fatalf("the outsider with %s is connected to the worker: %v", name, got)
		}
	}
}
