package requester

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The requester's side of the prefix cache in the swarm: before a local
// prefill, look the prompt's block keys up in the DHT and hand the backend
// a manifest of the longest prefix a peer holds, so it fetches those blocks
// over IPFS instead of computing them.
//
// Decision: a failed lookup is never the request's: the caller sends the
// request without a manifest and the backend computes the whole prompt.

// prefixLookupTimeout bounds one whole lookup: keys, DHT search, manifest,
// IPFS connection. A slow swarm costs at most this much before the prefill.
const prefixLookupTimeout = 20 * time.Second

// PrefixIndex is where cached KV prefixes are found: NodeSwarm over a p2p
// node.
type PrefixIndex interface {
	// LongestCachedPrefix finds the peer holding the longest run of keys'
	// leading blocks and fetches its manifest of them
	// (p2p.ErrNoCachedPrefix when no peer holds the first); peers in skip
	// are never asked.
	LongestCachedPrefix(ctx context.Context, weightsCID string, keys [][]byte, skip ...peer.ID) (p2p.KVHit, error)
	// IPFSAddrs are the addresses of the IPFS node peer p advertises.
	IPFSAddrs(ctx context.Context, p peer.ID) ([]ma.Multiaddr, error)
}

// PromptKeyer computes a prompt's KV block keys: the backend's PrefixKeys.
type PromptKeyer interface {
	PrefixKeys(ctx context.Context, req *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error)
}

// IPFSNode is this machine's IPFS node (an *ipfs.Client): it connects to
// the holder's to fetch the blocks.
type IPFSNode interface {
	SwarmConnect(ctx context.Context, addrs ...ma.Multiaddr) error
}

// Prefix is a cached prefix of a prompt found in the swarm.
type Prefix struct {
	// Manifest is the holder's manifest of the blocks, for
	// GenerateRequest.kv_manifest.
	Manifest []byte
	// Holder holds the most blocks; Holders every peer whose blocks the
	// manifest names (a split leaves each layer range on its own worker).
	Holder  peer.ID
	Holders []peer.ID
	Blocks  int
	// Tokens are the prompt tokens the blocks hold; PromptTokens the
	// prompt's (known once its keys are, even with nothing cached).
	Tokens       int
	PromptTokens int
	// IPFSPeers maps the IPFS peer id of each holder's IPFS node (as the
	// manifest's providers name it) to the holder: a backend reports bad
	// blocks by IPFS peer id (Distrust.Report).
	IPFSPeers map[string]peer.ID
}

// ErrNoIPFS: this machine has no IPFS node, so fetched blocks could not be
// loaded anyway.
var ErrNoIPFS = errors.New("no IPFS node: the KV cache is off")

// UnreachableError reports cached blocks held by a peer whose IPFS node this
// machine's could not connect to.
type UnreachableError struct {
	Holder peer.ID
	Blocks int
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%d cached KV blocks on %s are out of reach: %v", e.Blocks, e.Holder, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// CachedPrefix finds the longest prefix of req's prompt that a peer holds
// as KV blocks (keys from keyer, the local backend), fetches that peer's
// manifest and connects ipfs (nil: ErrNoIPFS) to the holder's IPFS node, so
// the backend can fetch the blocks by CID. A holder out of reach is an
// *UnreachableError. Holders in distrust are not asked.
func CachedPrefix(ctx context.Context, index PrefixIndex, keyer PromptKeyer, ipfs IPFSNode, req *pb.GenerateRequest, distrust *Distrust) (Prefix, error) {
	if ipfs == nil {
		return Prefix{}, ErrNoIPFS
	}
	ctx, cancel := context.WithTimeout(ctx, prefixLookupTimeout)
	defer cancel()
	hit, shape, err := lookup(ctx, index, keyer, req, distrust.Peers())
	if err != nil {
		return Prefix{}, err
	}
	addrs, err := connect(ctx, index, hit.Peer.ID, ipfs)
	if err != nil {
		return Prefix{}, &UnreachableError{Holder: hit.Peer.ID, Blocks: hit.Blocks, Err: err}
	}
	peers := map[string]peer.ID{}
	ipfsPeers(peers, hit.Peer.ID, addrs)
	for _, h := range hit.Holders { // other layers of the blocks (a split's): best effort
		if h.ID != hit.Peer.ID {
			if more, err := connect(ctx, index, h.ID, ipfs); err == nil {
				addrs = append(addrs, more...)
				ipfsPeers(peers, h.ID, more)
			}
		}
	}
	p, err := prefixOf(hit, shape, addrs)
	if err != nil {
		return Prefix{}, err
	}
	p.IPFSPeers = peers
	return p, nil
}

// StagePrefix finds the longest prefix of req's prompt the swarm holds for
// a cluster's stages: they fetch the blocks of their own layers themselves,
// connecting to the holders the manifest names, so this machine's IPFS node
// takes no part. With nothing cached the error comes with the prompt's
// length (Prefix.PromptTokens) when its keys were computed. Holders in
// distrust are not asked.
func StagePrefix(ctx context.Context, index PrefixIndex, keyer PromptKeyer, req *pb.GenerateRequest, distrust *Distrust) (Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, prefixLookupTimeout)
	defer cancel()
	hit, shape, err := lookup(ctx, index, keyer, req, distrust.Peers())
	if err != nil {
		return Prefix{PromptTokens: shape.prompt}, err
	}
	var addrs []ma.Multiaddr
	peers := map[string]peer.ID{}
	for _, h := range holderIDs(hit) {
		if more, err := index.IPFSAddrs(ctx, h); err == nil {
			more = more[:min(len(more), maxIPFSAddrs)]
			addrs = append(addrs, more...)
			ipfsPeers(peers, h, more)
		}
	}
	p, err := prefixOf(hit, shape, addrs)
	if err != nil {
		return Prefix{PromptTokens: shape.prompt}, err
	}
	p.IPFSPeers = peers
	return p, nil
}

// promptShape is what a prompt's keys say about it.
type promptShape struct {
	blockSize, prompt int
	keys              [][]byte
}

// prefixOf is the Prefix of hit as the backend gets it: the manifest vetted
// against the prompt's own keys, its providers only addrs, the IPFS
// addresses of the holders' signed records (see vetManifest).
func prefixOf(hit p2p.KVHit, shape promptShape, addrs []ma.Multiaddr) (Prefix, error) {
	manifest, blocks, err := vetManifest(hit.Manifest, shape.keys, addrs)
	if err != nil {
		return Prefix{}, fmt.Errorf("%w: %s: %w", p2p.ErrNoCachedPrefix, hit.Peer.ID, err)
	}
	return Prefix{Manifest: manifest, Holder: hit.Peer.ID, Holders: holderIDs(hit), Blocks: blocks,
		Tokens: blocks * shape.blockSize, PromptTokens: shape.prompt}, nil
}

// holderIDs are the peers whose blocks hit's manifest names.
func holderIDs(hit p2p.KVHit) []peer.ID {
	ids := make([]peer.ID, 0, len(hit.Holders))
	for _, h := range hit.Holders {
		ids = append(ids, h.ID)
	}
	if len(ids) == 0 {
		ids = []peer.ID{hit.Peer.ID}
	}
	return ids
}

// lookup computes the prompt's keys and finds its longest cached prefix
// (never asking skip); also the prompt's shape (once its keys are known).
func lookup(ctx context.Context, index PrefixIndex, keyer PromptKeyer, req *pb.GenerateRequest, skip []peer.ID) (p2p.KVHit, promptShape, error) {
	keysReq, err := prefixKeysRequest(req)
	if err != nil {
		return p2p.KVHit{}, promptShape{}, err
	}
	keys, err := keyer.PrefixKeys(ctx, keysReq)
	if err != nil {
		return p2p.KVHit{}, promptShape{}, fmt.Errorf("prefix keys: %w", err)
	}
	shape := promptShape{int(keys.GetBlockSize()), int(keys.GetPromptTokens()), keys.GetKeys()}
	if len(keys.GetKeys()) == 0 {
		return p2p.KVHit{}, shape, fmt.Errorf("%w: the prompt is shorter than one block", p2p.ErrNoCachedPrefix)
	}
	hit, err := index.LongestCachedPrefix(ctx, keys.GetWeightsCid(), keys.GetKeys(), skip...)
	return hit, shape, err
}

// prefixKeysRequest asks for the keys of req's prompt.
func prefixKeysRequest(req *pb.GenerateRequest) (*pb.PrefixKeysRequest, error) {
	keysReq := &pb.PrefixKeysRequest{Model: req.GetModel()}
	switch in := req.GetInput().(type) {
	case *pb.GenerateRequest_Prompt:
		keysReq.Input = &pb.PrefixKeysRequest_Prompt{Prompt: in.Prompt}
	case *pb.GenerateRequest_RawPrompt:
		keysReq.Input = &pb.PrefixKeysRequest_RawPrompt{RawPrompt: in.RawPrompt}
	case *pb.GenerateRequest_Messages:
		keysReq.Input = &pb.PrefixKeysRequest_Messages{Messages: in.Messages}
	default:
		return nil, errors.New("the request has no prompt")
	}
	return keysReq, nil
}

// connect connects ipfs to the IPFS node holder advertises in its signed
// record (at most maxIPFSAddrs addresses), and returns those addresses.
func connect(ctx context.Context, index PrefixIndex, holder peer.ID, ipfs IPFSNode) ([]ma.Multiaddr, error) {
	addrs, err := index.IPFSAddrs(ctx, holder)
	if err != nil {
		return nil, err
	}
	addrs = addrs[:min(len(addrs), maxIPFSAddrs)]
	if err := ipfs.SwarmConnect(ctx, addrs...); err != nil {
		return nil, fmt.Errorf("its IPFS node: %w", err)
	}
	return addrs, nil
}
