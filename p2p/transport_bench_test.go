package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// BenchmarkSwarmStream is the ceiling of any KV transfer between two peers over the
// swarm: one stream between two of our hosts on loopback (TCP, the pre-shared key's
// XSalsa20 in a private swarm, Noise, yamux), moving what the bench's prefix-cache prompt
// holds (98 KV blocks of 742 KB, 72.7 MB), nothing read from or written to any store.
// `make bench` runs it (bench/kv_transfer.py: swarm_stream_mb_s) beside the Kubo figures,
// so the same run shows how far bitswap is from what the transport itself allows. The
// receiver hashes each block, as a CID check would.
func BenchmarkSwarmStream(b *testing.B) {
	for _, private := range []bool{true, false} {
		name := "open"
		if private {
			name = "private"
		}
		b.Run(name, func(b *testing.B) {
			sender, receiver := streamPair(b, private)
			blocks := kvBlocks(benchBlocks, benchBlockBytes)
			b.SetBytes(int64(benchBlocks * benchBlockBytes))
			b.ResetTimer()
			for range b.N {
				if _, err := receiveBlocks(context.Background(), receiver, sender, blocks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSwarmStreamCarriesBlocksIntact: what the benchmark times arrives whole and in
// order, in a private swarm and an open one.
func TestSwarmStreamCarriesBlocksIntact(t *testing.T) {
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprintf("private=%v", private), func(t *testing.T) {
			sender, receiver := streamPair(t, private)
			blocks := kvBlocks(5, 300_001)
			sums, err := receiveBlocks(testContext(t, benchTimeout), receiver, sender, blocks)
			if err != nil {
				t.Fatal(err)
			}
			for i, block := range blocks {
				if sums[i] != sha256.Sum256(block) {
					t.Fatalf("block %d arrived changed", i)
				}
			}
		})
	}
}

const (
	benchBlocks     = 98
	benchBlockBytes = 742_011
	benchProtocol   = protocol.ID("/edgellm-test/blocks/1.0.0")
	benchTimeout    = 30 * time.Second
)

// streamPair is two connected hosts on loopback, members of one private swarm or open;
// t.Cleanup closes them.
func streamPair(t testing.TB, private bool) (sender, receiver host.Host) {
	t.Helper()
	var secret *Secret
	if private {
		s := newSecret(t)
		secret = &s
	}
	hosts := make([]host.Host, 2)
	for i := range hosts {
		h, err := NewHost(HostConfig{Identity: newKey(t), Secret: secret, ListenAddrs: []ma.Multiaddr{loopback}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		hosts[i] = h
	}
	sender, receiver = hosts[0], hosts[1]
	ctx := testContext(t, benchTimeout)
	if err := receiver.Connect(ctx, peer.AddrInfo{ID: sender.ID(), Addrs: sender.Addrs()}); err != nil {
		t.Fatal(err)
	}
	return sender, receiver
}

// kvBlocks is n distinct blocks of size bytes.
func kvBlocks(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, size/3+1)[:size]
	}
	return out
}

// receiveBlocks has sender serve `blocks` on one new stream and receiver read them back
// to back, hashing each; the hashes, in order.
func receiveBlocks(ctx context.Context, receiver, sender host.Host, blocks [][]byte) ([][32]byte, error) {
	sender.SetStreamHandler(benchProtocol, func(s network.Stream) {
		defer s.Close()
		for _, block := range blocks {
			if _, err := s.Write(block); err != nil {
				s.Reset()
				return
			}
		}
	})
	defer sender.RemoveStreamHandler(benchProtocol)
	s, err := receiver.NewStream(ctx, sender.ID(), benchProtocol)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	defer s.Close()
	sums := make([][32]byte, len(blocks))
	buf := make([]byte, 0, len(blocks[0]))
	for i, block := range blocks {
		buf = buf[:len(block)]
		if _, err := io.ReadFull(s, buf); err != nil {
			return nil, fmt.Errorf("block %d: %w", i, err)
		}
		sums[i] = sha256.Sum256(buf)
	}
	return sums, nil
}
