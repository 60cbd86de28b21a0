package p2p

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
)

// loopback is the only listen address tests use: TCP on 127.0.0.1, any port.
var loopback = ma.StringCast("/ip4/127.0.0.1/tcp/0")

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSecret(t testing.TB) Secret {
	t.Helper()
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestNode starts a node on loopback without mDNS; t.Cleanup closes it.
func newTestNode(t testing.TB, opts ...Option) *Node {
	t.Helper()
	base := []Option{WithIdentity(newKey(t)), WithListenAddrs(loopback), WithMDNS(false)}
	n, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// eventually polls cond every tick until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sampleCaps(models ...string) Capabilities {
	c := Capabilities{
		BackendVersion: "test", Device: "cpu", Engine: "vllm", MemoryTotalBytes: 8 << 30, MemoryFreeBytes: 4 << 30,
		PrefillTokensPerS: 500, DecodeTokensPerS: 40, MaxSessions: 4, PricePer1kMicros: 1500,
		Region: "lab", RayAddress: "127.0.0.1:6380",
	}
	for _, m := range models {
		c.Models = append(c.Models, Model{ID: m, WeightsCID: "bafk-" + m, NumLayers: 30, DirCID: "bafy-dir-" + m,
			LayerRanges: []LayerRange{{Start: 0, End: 30}}})
	}
	return c
}
