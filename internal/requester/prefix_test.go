package requester

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	skipped  []peer.ID // the last lookup's skip
}

// LongestCachedPrefix skips as p2p.Node does (tested there with real nodes):
// a skipped holder is no hit.
func (f *fakeIndex) LongestCachedPrefix(_ context.Context, _ string, _ [][]byte, skip ...peer.ID) (p2p.KVHit, error) {
	f.skipped = skip
	if slices.Contains(skip, f.hit.Peer.ID) {
		return p2p.KVHit{}, p2p.ErrNoCachedPrefix
	}
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
	key := testKeys(4)
	manifest := testManifest(key, []string{"/ip4/10.0.0.9/tcp/4001"})
	hit := p2p.KVHit{Peer: peer.AddrInfo{ID: holder}, Blocks: 4, Manifest: manifest}
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
			got, err := CachedPrefix(t.Context(), tt.index, fakeKeyer{tt.keys}, tt.ipfs, req, nil)
			var ue *UnreachableError
			switch {
			case tt.want == nil:
				if err != nil || got.Holder != holder || got.Blocks != 4 || !bytes.Equal(got.Manifest, manifest) {
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

// TestDistrustedHolderIsNotAskedAgain: once the backend reports that a
// holder's blocks failed its spot check (by the holder's IPFS peer id), the
// node's later lookups skip that holder; other ids change nothing. Both
// lookups: the local backend's (CachedPrefix) and a cluster's stages'
// (LookupPrefix, whose stages spot-check their layers).
func TestDistrustedHolderIsNotAskedAgain(t *testing.T) {
	holder := peer.ID("holder")
	const ipfsID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
	addr := ma.StringCast("/ip4/10.0.0.9/tcp/4001/p2p/" + ipfsID)
	keys := testKeys(4)
	hit := p2p.KVHit{Peer: peer.AddrInfo{ID: holder}, Blocks: 4, Manifest: testManifest(keys, nil)}
	lookups := []struct {
		name   string
		lookup func(*fakeIndex, *pb.GenerateRequest, *Distrust) (Prefix, error)
	}{
		{"local backend", func(index *fakeIndex, req *pb.GenerateRequest, d *Distrust) (Prefix, error) {
			return CachedPrefix(t.Context(), index, fakeKeyer{keys}, &fakeIPFS{}, req, d)
		}},
		{"cluster stages", func(index *fakeIndex, req *pb.GenerateRequest, d *Distrust) (Prefix, error) {
			return LookupPrefix(t.Context(), index, fakeKeyer{keys}, req, d)
		}},
	}
	for _, l := range lookups {
		t.Run(l.name, func(t *testing.T) {
			index := &fakeIndex{hit: hit, addrs: []ma.Multiaddr{addr}}
			req := &pb.GenerateRequest{Model: model, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}
			var distrust Distrust
			prefix, err := l.lookup(index, req, &distrust)
			if err != nil || prefix.IPFSPeers[ipfsID] != holder {
				t.Fatalf("lookup = %+v, %v; want the holder's IPFS peer id mapped", prefix, err)
			}
			for _, tt := range []struct {
				name    string
				dropped []string
				want    []peer.ID
			}{
				{"nothing dropped", nil, nil},
				{"another IPFS node", []string{"QmSomeoneElse"}, nil},
				{"the holder's", []string{ipfsID}, []peer.ID{holder}},
				{"the holder's again", []string{ipfsID}, nil},
			} {
				got := distrust.Report(prefix, &pb.GenerateResponse{DroppedKvHolders: tt.dropped})
				if !slices.Equal(got, tt.want) {
					t.Errorf("%s: Report = %v; want %v", tt.name, got, tt.want)
				}
			}
			_, err = l.lookup(index, &pb.GenerateRequest{Model: model, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}, &distrust)
			if !errors.Is(err, p2p.ErrNoCachedPrefix) || !slices.Equal(index.skipped, []peer.ID{holder}) {
				t.Fatalf("after the report: %v, skipped %v; want the holder skipped", err, index.skipped)
			}
		})
	}
}

func testKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = bytes.Repeat([]byte{byte(i + 1)}, 32)
	}
	return keys
}

// testManifest is a manifest of keys' blocks (block size 16) in the
// backend's format, naming providers.
func testManifest(keys [][]byte, providers []string) []byte {
	blocks := make([]map[string]any, len(keys))
	for i, k := range keys {
		blocks[i] = map[string]any{"key": hex.EncodeToString(k), "position": 16 * i,
			"parts": []map[string]any{{"layer_start": 0, "layer_end": 30, "cid": "bafkreix", "size": 1}}}
	}
	out, _ := json.Marshal(map[string]any{"format": "edgellm-kv-manifest/1", "model_cid": cid,
		"dtype": "float32", "block_size": 16, "blocks": blocks, "providers": providers})
	return out
}

// TestCachedPrefixVetsTheManifest (manifest floods): the backend gets only
// the holder's signed record's IPFS addresses, never the manifest's own
// list, and the blocks counted here, not the count the holder claims.
func TestCachedPrefixVetsTheManifest(t *testing.T) {
	keys := testKeys(4)
	record := []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.9/tcp/4001")}
	flood := make([]string, 20000)
	for i := range flood {
		flood[i] = fmt.Sprintf("/ip4/10.%d.%d.1/tcp/4001", i/250, i%250)
	}
	other := testManifest(testKeys(5)[1:], nil)
	tests := []struct {
		name      string
		manifest  []byte
		claimed   int
		addrs     []ma.Multiaddr
		blocks    int // 0: refused
		providers []string
	}{
		{"a flood of providers", testManifest(keys, flood), 4, record, 4, []string{"/ip4/10.0.0.9/tcp/4001"}},
		{"claims more blocks than it lists", testManifest(keys[:2], nil), 4, record, 2, []string{"/ip4/10.0.0.9/tcp/4001"}},
		{"lists blocks of another prompt", other, 4, record, 0, nil},
		{"not JSON", []byte("{"), 4, record, 0, nil},
		{"a record with too many addresses", testManifest(keys, nil), 4, repeatAddr(record[0], 50), 4, repeatStr("/ip4/10.0.0.9/tcp/4001", maxIPFSAddrs)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			index := &fakeIndex{hit: p2p.KVHit{Peer: peer.AddrInfo{ID: "holder"}, Blocks: tt.claimed, Manifest: tt.manifest}, addrs: tt.addrs}
			req := &pb.GenerateRequest{Model: model, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}}
			ipfs := &fakeIPFS{}
			got, err := CachedPrefix(t.Context(), index, fakeKeyer{keys}, ipfs, req, nil)
			if tt.blocks == 0 {
				if !errors.Is(err, p2p.ErrNoCachedPrefix) {
					t.Fatalf("CachedPrefix = %+v, %v; want ErrNoCachedPrefix", got.Blocks, err)
				}
				return
			}
			if err != nil || got.Blocks != tt.blocks {
				t.Fatalf("CachedPrefix: %d blocks, %v; want %d", got.Blocks, err, tt.blocks)
			}
			var doc struct {
				Providers []string
				Blocks    []any
			}
			if err := json.Unmarshal(got.Manifest, &doc); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(doc.Providers) != fmt.Sprint(tt.providers) || len(doc.Blocks) != tt.blocks {
				t.Fatalf("providers %v, %d blocks; want %v, %d", doc.Providers, len(doc.Blocks), tt.providers, tt.blocks)
			}
			if len(ipfs.connected) > maxIPFSAddrs {
				t.Fatalf("dialled %d addresses", len(ipfs.connected))
			}
		})
	}
}

func repeatAddr(a ma.Multiaddr, n int) []ma.Multiaddr {
	out := make([]ma.Multiaddr, n)
	for i := range out {
		out[i] = a
	}
	return out
}

func repeatStr(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
