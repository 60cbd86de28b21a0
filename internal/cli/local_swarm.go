package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/linetail"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/internal/requester"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// localSwarm is the swarm membership of `infer --local` when a swarm is
// configured: a client node that looks the prompt's prefix up in the swarm
// (requester.CachedPrefix), and an IPFS node in the swarm's private IPFS
// network to fetch blocks with. A nil *localSwarm does nothing.
type localSwarm struct {
	app    *App
	node   *p2p.Node
	index  *requester.NodeSwarm
	secret p2p.Secret
	d      *distOptions
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
	if !d.swarm.given() {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, joinFile)); err != nil {
			return nil, nil
		}
	}
	join, err := d.swarm.resolve(cfg, app.stdin)
	if err != nil {
		return nil, err
	}
	listen, err := parseListen(d.listen)
	if err != nil {
		return nil, err
	}
	node, err := app.clientNode(join, listen, d.swarm.noMDNS, 0)
	if err != nil {
		app.log.Debug("kv: no swarm for the prefix lookup", "err", err)
		return nil, nil
	}
	index, err := requester.NewSwarm(node, app.log)
	if err != nil {
		node.Close()
		app.log.Debug("kv: no swarm for the prefix lookup", "err", err)
		return nil, nil
	}
	return &localSwarm{app: app, node: node, index: index, secret: join.Secret, d: d}, nil
}

// openOptions puts the IPFS node into the swarm's private IPFS network.
func (s *localSwarm) openOptions() []localnode.Option {
	if s == nil {
		return nil
	}
	listen, _ := parseListen(s.d.listen)
	return []localnode.Option{localnode.WithSwarm(s.secret[:], listen)}
}

// fillManifest sets req.KvManifest from the swarm's longest cached prefix;
// a holder out of reach costs one warning line.
func (s *localSwarm) fillManifest(ctx context.Context, n *localnode.Node, req *pb.GenerateRequest) {
	if s == nil {
		return
	}
	var ipfs requester.IPFSNode // nil when the node has none
	if c := n.IPFS(); c != nil {
		ipfs = c
	}
	prefix, err := requester.CachedPrefix(ctx, s.index, n, ipfs, req, nil) // one request: nobody to distrust yet
	if ue, ok := errors.AsType[*requester.UnreachableError](err); ok {
		s.app.warn(fmt.Sprintf("%d cached KV blocks on %s are out of reach (%s); computing the whole prompt",
			ue.Blocks, ue.Holder, linetail.OneLine(ue.Err.Error())))
	}
	if err != nil {
		s.app.log.Debug("kv: no cached prefix from the swarm", "err", err)
		return
	}
	s.app.log.Info("kv: cached prefix found in the swarm", "peer", prefix.Holder, "blocks", prefix.Blocks)
	req.KvManifest = prefix.Manifest
}

// Close leaves the swarm.
func (s *localSwarm) Close() {
	if s != nil {
		s.index.Close()
		s.node.Close()
	}
}
