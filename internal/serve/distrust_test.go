package serve

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

const holderIPFS = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"

var promptKey = bytes.Repeat([]byte{7}, 32)

// poisonedBackend is a fake of the backend's side of a poisoning holder
// (the spot check itself runs for real in tests/python/test_kv_engine.py):
// every generation given a manifest reports the manifest's holder as
// dropped, as the backend does when the holder's blocks fail the check.
type poisonedBackend struct {
	backend.Backend
	manifests int // generations that were handed a manifest
}

func (b *poisonedBackend) PrefixKeys(context.Context, *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error) {
	return &pb.PrefixKeysResponse{Keys: [][]byte{promptKey}, WeightsCid: "bafk-m", BlockSize: 16, PromptTokens: 20}, nil
}

// Abort: a generation here is over before it returns (generateOn may still
// call this once the test's context ends).
func (b *poisonedBackend) Abort(context.Context, string) (bool, error) { return false, nil }

func (b *poisonedBackend) Generate(_ context.Context, req *pb.GenerateRequest, on func(*pb.GenerateResponse) error) error {
	resp := &pb.GenerateResponse{RequestId: req.GetRequestId(), TokenIds: []uint32{1}, FinishReason: pb.FinishReason_FINISH_REASON_STOP}
	if len(req.GetKvManifest()) > 0 {
		b.manifests++
		resp.DroppedKvHolders = []string{holderIPFS}
	}
	return on(resp)
}

// holderIndex finds one holder's prefix unless the lookup skips it (as
// p2p.Node does, tested there with real nodes), and records the skips.
type holderIndex struct {
	holder peer.ID
	skips  [][]peer.ID
}

func (x *holderIndex) LongestCachedPrefix(_ context.Context, _ string, keys [][]byte, skip ...peer.ID) (p2p.KVHit, error) {
	x.skips = append(x.skips, skip)
	if slices.Contains(skip, x.holder) {
		return p2p.KVHit{}, p2p.ErrNoCachedPrefix
	}
	manifest, _ := json.Marshal(map[string]any{"format": "edgellm-kv-manifest/1", "model_cid": "bafk-m",
		"dtype": "float32", "block_size": 16, "providers": []string{},
		"blocks": []map[string]any{{"key": hex.EncodeToString(keys[0]), "position": 0,
			"parts": []map[string]any{{"layer_start": 0, "layer_end": 30, "cid": "bafkreix", "size": 1}}}}})
	return p2p.KVHit{Peer: peer.AddrInfo{ID: x.holder}, Blocks: 1, Manifest: manifest}, nil
}

func (x *holderIndex) IPFSAddrs(context.Context, peer.ID) ([]ma.Multiaddr, error) {
	return []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.9/tcp/4001/p2p/" + holderIPFS)}, nil
}

type connectingIPFS struct{}

func (connectingIPFS) SwarmConnect(context.Context, ...ma.Multiaddr) error { return nil }

// TestHolderFailingTheSpotCheckIsNotAskedAgain: once the backend reports
// that a holder's blocks failed its spot check, serve's later lookups skip
// that holder, so no later request is handed its manifest.
func TestHolderFailingTheSpotCheckIsNotAskedAgain(t *testing.T) {
	b := &poisonedBackend{}
	index := &holderIndex{holder: peer.ID("holder")}
	s, err := New(Options{Backend: b, Models: []string{"m"},
		Swarm: &Swarm{Index: index, IPFS: connectingIPFS{}, Local: []string{"m"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"first", "second", "third"} {
		req := &pb.GenerateRequest{RequestId: id, Model: "m", Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}
		if _, err := s.Generate(t.Context(), req, func(*pb.GenerateResponse) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if b.manifests != 1 {
		t.Errorf("%d generations were handed the bad holder's manifest; want only the first", b.manifests)
	}
	want := [][]peer.ID{nil, {index.holder}, {index.holder}}
	if !slices.EqualFunc(index.skips, want, slices.Equal) {
		t.Errorf("lookups skipped %v; want %v", index.skips, want)
	}
}
