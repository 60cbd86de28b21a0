package requester

import (
	"context"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

type fakeIndex struct {
	hit      p2p.KVHit
	hitErr   error
	addrs    []ma.Multiaddr
	addrsErr error
}

func (f *fakeIndex) LongestCachedPrefix(context.Context, string, [][]byte) (p2p.KVHit, error) {
	return f.hit, f.hitErr
}

func (f *fakeIndex) IPFSAddrs(context.Context, peer.ID) ([]ma.Multiaddr, error) {
	return f.addrs, f.addrsErr
}

type fakeKeyer struct{ keys [][]byte }

func (f fakeKeyer) PrefixKeys(_ context.Context, req *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error) {
	if req.GetPrompt() == "" {
		return nil, errors.New("keyer: no prompt")
	}
	return &pb.PrefixKeysResponse{Keys: f.keys, WeightsCid: cid}, nil
}

type fakeIPFS struct {
	err       error
	connected []ma.Multiaddr
}

func (f *fakeIPFS) SwarmConnect(_ context.Context, addrs ...ma.Multiaddr) error {
	f.connected = append(f.connected, addrs...)
	return f.err
}

// TestCachedPrefix: a prompt's cached prefix comes with the holder's
// manifest once this machine's IPFS node is connected to the holder's; every
// way it can fail is an error the caller only logs, and an unreachable
// holder says how many blocks it missed.
func TestCachedPrefix(t *testing.T) {
	holder := peer.ID("holder")
	addr := ma.StringCast("/ip4/10.0.0.9/tcp/4001")
	hit := p2p.KVHit{Peer: peer.AddrInfo{ID: holder}, Blocks: 4, Manifest: []byte(`{"blocks":4}`)}
	key := [][]byte{make([]byte, 32)}
	tests := []struct {
		name  string
		index *fakeIndex
		keys  [][]byte
		ipfs  IPFSNode
		want  error // nil: found
	}{
		{"found", &fakeIndex{hit: hit, addrs: []ma.Multiaddr{addr}}, key, &fakeIPFS{}, nil},
		{"no IPFS node", &fakeIndex{hit: hit}, key, nil, ErrNoIPFS},
		{"prompt shorter than a block", &fakeIndex{hit: hit}, nil, &fakeIPFS{}, p2p.ErrNoCachedPrefix},
		{"nobody holds it", &fakeIndex{hitErr: p2p.ErrNoCachedPrefix}, key, &fakeIPFS{}, p2p.ErrNoCachedPrefix},
		{"holder advertises no IPFS node", &fakeIndex{hit: hit, addrsErr: errors.New("it advertises no IPFS node")}, key,
			&fakeIPFS{}, &UnreachableError{}},
		{"holder's IPFS node refuses", &fakeIndex{hit: hit, addrs: []ma.Multiaddr{addr}}, key,
			&fakeIPFS{err: errors.New("dial refused")}, &UnreachableError{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &pb.GenerateRequest{Model: model, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}
			got, err := CachedPrefix(t.Context(), tt.index, fakeKeyer{tt.keys}, tt.ipfs, req)
			var ue *UnreachableError
			switch {
			case tt.want == nil:
				if err != nil || got.Holder != holder || got.Blocks != 4 || string(got.Manifest) != `{"blocks":4}` {
					t.Fatalf("CachedPrefix = %+v, %v", got, err)
				}
				if f := tt.ipfs.(*fakeIPFS); len(f.connected) != 1 || !f.connected[0].Equal(addr) {
					t.Errorf("connected to %v; want the holder's IPFS node", f.connected)
				}
			case errors.As(tt.want, &ue):
				if !errors.As(err, &ue) || ue.Holder != holder || ue.Blocks != 4 {
					t.Fatalf("CachedPrefix: %v; want the holder's 4 blocks out of reach", err)
				}
			case !errors.Is(err, tt.want):
				t.Fatalf("CachedPrefix: %v; want %v", err, tt.want)
			}
		})
	}
}
