package volunteer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The worker's side of the prefix cache in the swarm (docs/architecture.md,
// "KV blocks over IPFS"): it announces the KV block keys its
// backend holds as DHT provider records, and serves manifests of them over
// /edgellm/kv/1.0.0.

const (
	// kvAnnounceInterval is how often the worker asks its backend for keys
	// it has not announced yet.
	kvAnnounceInterval = 2 * time.Second
	// kvCallTimeout bounds one backend call of the announcer.
	kvCallTimeout = 10 * time.Second
)

// kvAnnouncer announces new held keys every kvAnnounceInterval, and every
// held key again every reannounce (a third of the provider records' TTL), so
// records of keys still held never expire while those of evicted keys do.
type kvAnnouncer struct {
	b          Backend
	node       *p2p.Node
	log        *slog.Logger
	interval   time.Duration
	reannounce time.Duration
}

func (a *kvAnnouncer) run(ctx context.Context) {
	var after uint64
	full := time.Now()
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		if time.Since(full) >= a.reannounce {
			after, full = 0, time.Now()
		}
		after = a.step(ctx, after)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// step announces every held key with a seq above after, page by page, and
// returns the seq to continue from.
func (a *kvAnnouncer) step(ctx context.Context, after uint64) uint64 {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, kvCallTimeout)
		resp, err := a.b.HeldKeys(cctx, after, 0)
		cancel()
		if err != nil {
			a.log.Debug("kv: held keys", "err", err)
			return after
		}
		if keys := resp.GetKeys(); len(keys) > 0 {
			n, err := a.node.AnnounceKeys(ctx, keys)
			// The provider records are kept locally even when the DHT has
			// nobody to send them to yet; the periodic re-announcement
			// spreads them later.
			a.log.Debug("kv: announced block keys", "count", n, "of", len(keys), "err", err)
		}
		after = max(after, resp.GetNextSeq())
		if !resp.GetMore() {
			break
		}
	}
	return after
}

// kvHandler serves /edgellm/kv/1.0.0 from the backend's KV store; the
// manifests name this peer's IPFS node as their provider.
type kvHandler struct {
	b         Backend
	providers []string
}

var _ p2p.KVHandler = (*kvHandler)(nil)

// Manifest implements p2p.KVHandler.
func (h *kvHandler) Manifest(ctx context.Context, _ peer.ID, weightsCID string, keys [][]byte) (p2p.KVManifest, error) {
	resp, err := h.b.BlockManifest(ctx, &pb.BlockManifestRequest{Keys: keys, WeightsCid: weightsCID, Providers: h.providers})
	if err != nil {
		// Only the status message goes to the requester, not local details.
		return p2p.KVManifest{}, fmt.Errorf("backend: %s", status.Convert(err).Message())
	}
	return p2p.KVManifest{Manifest: resp.GetManifest(), Blocks: int(resp.GetBlocks())}, nil
}

// serveKV starts announcing the backend's held block keys and serving
// manifests of them naming the IPFS node at ipfsAddrs (dialable, with
// /p2p). The returned stop ends both and waits.
func serveKV(node *p2p.Node, b Backend, ipfsAddrs []ma.Multiaddr, log *slog.Logger) (stop func()) {
	var providers []string
	for _, a := range ipfsAddrs {
		providers = append(providers, a.String())
	}
	svc, err := p2p.NewKVService(node.Host(), &kvHandler{b: b, providers: providers}, 0, log)
	if err != nil {
		log.Warn("kv: not serving block manifests", "err", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &kvAnnouncer{b: b, node: node, log: log, interval: kvAnnounceInterval,
		reannounce: max(node.ProviderTTL()/3, kvAnnounceInterval)}
	var wg sync.WaitGroup
	wg.Go(func() { a.run(ctx) })
	return func() {
		cancel()
		wg.Wait()
		svc.Close()
	}
}
