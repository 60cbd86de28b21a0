package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/linetail"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The requester's side of the prefix cache in the swarm: before a prefill,
// look the prompt's block keys up in the DHT and hand the backend a manifest
// of the longest prefix a peer holds, so it fetches those blocks over IPFS
// instead of computing them.

// kvLookupTimeout bounds one whole lookup: keys, DHT search, manifest, IPFS
// connection. A slow swarm costs at most this much before the prefill.
const kvLookupTimeout = 20 * time.Second

// errNoKVCache: this node has no IPFS node, so fetched blocks could not be
// loaded anyway.
var errNoKVCache = errors.New("no IPFS node: the KV cache is off")

// cachedPrefix finds the longest prefix of req's prompt that a peer of the
// swarm holds as KV blocks, fetches that peer's manifest over
// /edgellm/kv/1.0.0 and connects this node's IPFS node (ipfs) to the
// holder's (the addresses in its capability record), so the backend can
// fetch the blocks by CID. The manifest is for req.KvManifest.
//
// A failure is never the request's: the caller sends the request without a
// manifest and the backend computes the whole prompt. err says why (the
// caller logs it at debug level); an unreachable holder also prints one
// warning line.
func (app *App) cachedPrefix(ctx context.Context, node *p2p.Node, b backend.Backend, req *pb.GenerateRequest, ipfs *ipfs.Client) (manifest []byte, holder peer.ID, cachedBlocks int, err error) {
	if ipfs == nil {
		return nil, "", 0, errNoKVCache
	}
	ctx, cancel := context.WithTimeout(ctx, kvLookupTimeout)
	defer cancel()
	keysReq := &pb.PrefixKeysRequest{Model: req.GetModel()}
	switch in := req.GetInput().(type) {
	case *pb.GenerateRequest_Prompt:
		keysReq.Input = &pb.PrefixKeysRequest_Prompt{Prompt: in.Prompt}
	case *pb.GenerateRequest_RawPrompt:
		keysReq.Input = &pb.PrefixKeysRequest_RawPrompt{RawPrompt: in.RawPrompt}
	case *pb.GenerateRequest_Messages:
		keysReq.Input = &pb.PrefixKeysRequest_Messages{Messages: in.Messages}
	default:
		return nil, "", 0, errors.New("the request has no prompt")
	}
	keys, err := b.PrefixKeys(ctx, keysReq)
	if err != nil {
		return nil, "", 0, fmt.Errorf("prefix keys: %w", err)
	}
	if len(keys.GetKeys()) == 0 {
		return nil, "", 0, fmt.Errorf("%w: the prompt is shorter than one block", p2p.ErrNoCachedPrefix)
	}
	hit, err := node.LongestCachedPrefix(ctx, keys.GetWeightsCid(), keys.GetKeys())
	if err != nil {
		return nil, "", 0, err
	}
	if err := app.connectHolderIPFS(ctx, node, hit.Peer.ID, ipfs); err != nil {
		fmt.Fprintf(app.stderr, "edgellm: warning: %d cached KV blocks on %s are out of reach (%s); computing the whole prompt\n",
			hit.Blocks, hit.Peer.ID, linetail.OneLine(err.Error()))
		return nil, hit.Peer.ID, 0, err
	}
	return hit.Manifest, hit.Peer.ID, hit.Blocks, nil
}

// connectHolderIPFS connects this node's IPFS node to the one p advertises
// in its capability record.
func (app *App) connectHolderIPFS(ctx context.Context, node *p2p.Node, p peer.ID, c *ipfs.Client) error {
	rec, _, err := node.FetchRecord(ctx, p)
	if err != nil {
		return fmt.Errorf("no capability record: %w", err)
	}
	addrs := rec.IPFSDialAddrs()
	if len(addrs) == 0 {
		return errors.New("it advertises no IPFS node")
	}
	if err := c.SwarmConnect(ctx, addrs...); err != nil {
		return fmt.Errorf("its IPFS node: %w", err)
	}
	return nil
}

// localSwarm is the swarm membership of `infer --local` when a swarm is
// configured: a client node that looks the prompt's prefix up in the swarm,
// and an IPFS node in the swarm's private IPFS network to fetch blocks with.
// A nil *localSwarm does nothing.
type localSwarm struct {
	app  *App
	node *p2p.Node
	join p2p.Join
	d    *distOptions
}

// joinForLocal joins the configured swarm for `infer --local` (nil when no
// swarm is configured, or, with a debug line, when the network cannot be
// joined: the prompt is then simply computed here). A malformed join string
// or listen address is the user's mistake and an error (exit 2), not a
// silent local run.
func (app *App) joinForLocal(cfg *config.Config, d *distOptions) (*localSwarm, error) {
	if !d.local {
		return nil, nil
	}
	if d.swarm.join == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, joinFile)); err != nil {
			return nil, nil
		}
	}
	join, err := d.swarm.resolve(cfg)
	if err != nil {
		return nil, err
	}
	listen, err := parseListen(d.listen)
	if err != nil {
		return nil, err
	}
	key, err := p2p.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	opts := []p2p.Option{p2p.WithIdentity(key), p2p.WithSecret(join.Secret), p2p.WithBootstrap(join.Bootstrap...),
		p2p.WithMDNS(!d.swarm.noMDNS), p2p.WithLogger(app.log)}
	if len(listen) > 0 {
		opts = append(opts, p2p.WithListenAddrs(listen...))
	}
	node, err := p2p.New(opts...)
	if err != nil {
		app.log.Debug("kv: no swarm for the prefix lookup", "err", err)
		return nil, nil
	}
	return &localSwarm{app: app, node: node, join: join, d: d}, nil
}

// openOptions puts the IPFS node into the swarm's private IPFS network.
func (s *localSwarm) openOptions() []localnode.Option {
	if s == nil {
		return nil
	}
	listen, _ := parseListen(s.d.listen)
	return []localnode.Option{localnode.WithSwarm(s.join.Secret[:], listen)}
}

// fillManifest sets req.KvManifest from the swarm's longest cached prefix.
func (s *localSwarm) fillManifest(ctx context.Context, n *localnode.Node, req *pb.GenerateRequest) {
	if s == nil {
		return
	}
	manifest, holder, blocks, err := s.app.cachedPrefix(ctx, s.node, n, req, n.IPFS())
	if err != nil {
		s.app.log.Debug("kv: no cached prefix from the swarm", "err", err)
		return
	}
	s.app.log.Info("kv: cached prefix found in the swarm", "peer", holder, "blocks", blocks)
	req.KvManifest = manifest
}

// Close leaves the swarm.
func (s *localSwarm) Close() {
	if s != nil {
		s.node.Close()
	}
}
