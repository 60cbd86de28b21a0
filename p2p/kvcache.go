package p2p

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// The prefix cache in the swarm (docs/architecture.md, "KV blocks over
// IPFS"): peers announce the chained KV block keys they hold as DHT provider
// records; a requester looks up the longest prefix of its prompt's keys that
// some peer holds and asks that peer for a manifest over KVProtocol
// (kvcache_protocol.go).
//
// Provider key of a block key: the CIDv1 (raw codec) of
// sha2-256("edgellm-kv/1" ‖ key). Hashing with a domain tag, rather than
// wrapping the key in an identity multihash, keeps these provider keys apart
// from every other key in the DHT (models, members) and from the blocks'
// own IPFS CIDs, and gives them the same shape as the swarm's other
// provider keys (modelkey.go). Block keys are fixed-length (KVKeyLen), so the
// concatenation is unambiguous.
const (
	// KVKeyLen is the length of a chained block key (sha-256).
	KVKeyLen = 32
	// MaxKVKeys caps the keys of one request, reply or lookup.
	MaxKVKeys = 4096
	// kvKeyDomain tags the hash of a provider key.
	kvKeyDomain = "edgellm-kv/1"

	// kvProvideParallelism bounds the concurrent DHT Provide calls of one
	// AnnounceKeys.
	kvProvideParallelism = 8
	// kvFindTimeout bounds one provider search of LongestCachedPrefix.
	kvFindTimeout = 5 * time.Second
	// kvFindMax is how many providers a prefix search collects per key.
	kvFindMax = 4
	// kvAskMax is how many providers LongestCachedPrefix asks for a manifest.
	kvAskMax = 3
)

// ErrNoCachedPrefix: no peer holds even the first block of the prompt.
var ErrNoCachedPrefix = errors.New("no cached prefix in the swarm")

// KVKeyCID is the DHT provider key of a chained block key.
func KVKeyCID(key []byte) (cid.Cid, error) {
	if len(key) != KVKeyLen {
		return cid.Undef, fmt.Errorf("%w: a block key is %d bytes, got %d", ErrInvalidKVMessage, KVKeyLen, len(key))
	}
	h, err := mh.Sum(append([]byte(kvKeyDomain), key...), mh.SHA2_256, -1)
	if err != nil { // sha2-256 is always available
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, h), nil
}

// checkKVKeys accepts 1 to MaxKVKeys keys of KVKeyLen bytes.
func checkKVKeys(keys [][]byte) error {
	if len(keys) == 0 || len(keys) > MaxKVKeys {
		return fmt.Errorf("%w: %d keys, want 1 to %d", ErrInvalidKVMessage, len(keys), MaxKVKeys)
	}
	for i, k := range keys {
		if len(k) != KVKeyLen {
			return fmt.Errorf("%w: key %d is %d bytes, want %d", ErrInvalidKVMessage, i, len(k), KVKeyLen)
		}
	}
	return nil
}

// ProviderTTL is how long a provider record this node publishes stays valid
// in the DHT (the record TTL); announcements must be renewed within it.
func (n *Node) ProviderTTL() time.Duration { return n.cfg.RecordTTL }

// AnnounceKeys provides every key in the DHT, at most kvProvideParallelism
// at a time. It returns how many were announced and the first error. A node
// whose routing table is empty still records itself as a provider locally,
// so peers that ask it directly find it; Provide then fails and the caller
// announces again later.
func (n *Node) AnnounceKeys(ctx context.Context, keys [][]byte) (int, error) {
	var (
		mu       sync.Mutex
		done     int
		firstErr error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, kvProvideParallelism)
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for _, key := range keys {
		c, err := KVKeyCID(key)
		if err != nil {
			fail(err)
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return done, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := n.disc.Provide(ctx, c); err != nil {
				fail(fmt.Errorf("provide %s: %w", c, err))
				return
			}
			mu.Lock()
			done++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return done, firstErr
}

// FindKeyProviders returns up to max providers of key (this node excluded),
// searching until ctx ends or the DHT has no more to say.
func (n *Node) FindKeyProviders(ctx context.Context, key []byte, max int) ([]peer.AddrInfo, error) {
	c, err := KVKeyCID(key)
	if err != nil {
		return nil, err
	}
	if max <= 0 {
		max = kvFindMax
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []peer.AddrInfo
	seen := map[peer.ID]bool{}
	for ai := range n.disc.FindProviders(ctx, c) {
		if ai.ID == n.host.ID() || seen[ai.ID] {
			continue
		}
		seen[ai.ID] = true
		out = append(out, ai)
		if len(out) == max {
			cancel()
			break
		}
	}
	return out, nil
}

// KVHit is the longest cached prefix found in the swarm: the peer that
// holds it, how many leading blocks its manifest names, and the manifest.
type KVHit struct {
	// Peer holds the most blocks; Holders are every provider whose
	// manifest is merged into Manifest (Peer among them).
	Peer    peer.AddrInfo
	Holders []peer.AddrInfo
	Blocks  int
	// Manifest is the holders' manifests (edgellm.kv.manifest JSON) of those
	// blocks merged (MergeKVManifests), for GenerateRequest.kv_manifest.
	Manifest []byte
}

// LongestCachedPrefix finds the longest prefix of keys (a prompt's chained
// block keys, first block first) that a peer holds: a binary search over the
// prefix length asks the DHT for providers of the prefix's last key (a peer
// holding block i of a chain usually holds blocks 0..i, which share its
// prompt prefix); then it asks those providers (at most kvAskMax) for a
// manifest of that prefix over KVProtocol, which verifies the claim, and
// returns their manifests merged (a split's stages each hold their layers
// of the blocks). Providers in skip (holders whose blocks failed a spot
// check) count as absent: they are never asked. ErrNoCachedPrefix when none.
func (n *Node) LongestCachedPrefix(ctx context.Context, weightsCID string, keys [][]byte, skip ...peer.ID) (KVHit, error) {
	if err := checkKVKeys(keys); err != nil {
		return KVHit{}, err
	}
	// A member is usually connected by now (the node starts before the
	// backend); an unreachable swarm costs at most kvFindTimeout here.
	wctx, wcancel := context.WithTimeout(ctx, kvFindTimeout)
	n.waitRoutable(wctx)
	wcancel()
	lo, hi := 0, len(keys)
	var cands []peer.AddrInfo
	for lo < hi {
		mid := (lo + hi + 1) / 2
		fctx, cancel := context.WithTimeout(ctx, kvFindTimeout)
		ps, _ := n.FindKeyProviders(fctx, keys[mid-1], kvFindMax)
		cancel()
		ps = slices.DeleteFunc(ps, func(ai peer.AddrInfo) bool { return slices.Contains(skip, ai.ID) })
		if ctx.Err() != nil {
			return KVHit{}, ctx.Err()
		}
		if len(ps) > 0 {
			lo, cands = mid, ps
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 {
		return KVHit{}, ErrNoCachedPrefix
	}
	var best KVHit
	var errs []error
	var docs [][]byte
	for _, ai := range cands[:min(len(cands), kvAskMax)] {
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Minute)
		m, err := FetchKVManifest(ctx, n.host, ai.ID, weightsCID, keys[:lo], n.cfg.FetchTimeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ai.ID, err))
			continue
		}
		if m.Blocks == 0 {
			continue
		}
		// Every holder asked: each may hold other layers of the blocks (a split's).
		docs = append(docs, m.Manifest)
		best.Holders = append(best.Holders, ai)
		if m.Blocks > best.Blocks {
			best.Peer, best.Blocks, best.Manifest = ai, m.Blocks, m.Manifest
		}
	}
	if best.Blocks == 0 {
		return KVHit{}, fmt.Errorf("%w: %d providers of %d blocks answered no manifest: %w",
			ErrNoCachedPrefix, len(cands), lo, errors.Join(errs...))
	}
	if len(docs) > 1 {
		if merged, blocks, err := MergeKVManifests(docs...); err == nil && blocks > 0 {
			best.Manifest, best.Blocks = merged, blocks
		}
	}
	return best, nil
}

// waitRoutable waits (until ctx ends) for the DHT's routing table to hold a
// peer: before that a search has nobody to ask.
func (n *Node) waitRoutable(ctx context.Context) {
	d, ok := n.disc.(*dhtDiscovery)
	for ctx.Err() == nil {
		if ok && d.dht.RoutingTable().Size() > 0 || !ok && len(n.host.Network().Peers()) > 0 {
			return
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}
