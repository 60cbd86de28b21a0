package requester

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestLookupPrefix: the lookup infer and serve share hands the stages the
// manifest on a hit, leaves the request alone on a miss or when the request
// turned the cache off, and names the holders.
func TestLookupPrefix(t *testing.T) {
	holder := peer.ID("holder")
	key := testKeys(4)
	manifest := testManifest(key, []string{"/ip4/10.0.0.9/tcp/4001"})
	hit := p2p.KVHit{Peer: peer.AddrInfo{ID: holder}, Blocks: 4, Manifest: manifest}
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.9/tcp/4001")}
	tests := []struct {
		name    string
		index   *fakeIndex
		noCache bool
		want    error // nil: found
	}{
		{"found", &fakeIndex{hit: hit, addrs: addrs}, false, nil},
		{"nobody holds it", &fakeIndex{hitErr: p2p.ErrNoCachedPrefix}, false, p2p.ErrNoCachedPrefix},
		{"no_prefix_cache", &fakeIndex{hit: hit, addrs: addrs}, true, ErrPrefixCacheOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &pb.GenerateRequest{Model: model, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}, NoPrefixCache: tt.noCache}
			got, err := LookupPrefix(t.Context(), tt.index, fakeKeyer{key}, req, nil)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || req.KvManifest != nil {
					t.Fatalf("LookupPrefix: %v, manifest %d bytes; want %v and none", err, len(req.KvManifest), tt.want)
				}
				return
			}
			if err != nil || !bytes.Equal(req.KvManifest, got.Manifest) || got.Blocks != 4 {
				t.Fatalf("LookupPrefix = %+v, %v; want the manifest in the request", got, err)
			}
			if ids := got.HolderIDs(); len(ids) != 1 || ids[0] != holder.String() {
				t.Errorf("holders %v, want [%s]", ids, holder)
			}
		})
	}
}
