// Package volunteer is the worker's runtime: it volunteers this machine's
// backend to a swarm (docs/architecture.md, "The worker path"). Start joins
// the swarm with the node's persistent identity, advertises a signed
// capability record built from the backend's status, accepts cluster joins
// (/edgellm/cluster/1.0.0) by having the backend join the requester's Ray
// cluster, announces the KV blocks the backend holds and serves manifests
// of them (/edgellm/kv/1.0.0), with AcceptPulls pulls and serves models
// members ask for (/edgellm/pull/1.0.0, pulls.go), and writes
// <data dir>/worker.json while it runs.
//
// Decisions:
//   - The caller opens this machine's backend and IPFS node (localnode) and
//     loads the model before Start; the worker neither starts nor stops
//     them, so one backend can serve a worker and a requester at once
//     (Node exposes the p2p node for the requester's discovery).
//   - The IPFS node's peer id and addresses go into the record, so members
//     connect their IPFS nodes to it and fetch KV blocks from it; when the
//     IPFS node does not say who it is, the record carries none (a warning
//     in the log) and manifests name no provider.
//   - Errors from the network's construction are returned as p2p's own
//     (p2p.ErrInvalidConfig, p2p.ErrQUICInPrivateSwarm), so a caller can
//     tell a bad configuration from a failure.
//   - Leaving is best effort: sessions end first (each leaves its Ray
//     cluster), then the KV service, then a signed withdrawal; what fails is
//     logged, and a record that was not withdrawn expires.
package volunteer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// StateFile is written in the data directory while a worker runs: its peer
// id, addresses and a join string through it, for operators and scripts.
const StateFile = "worker.json"

// ipfsIDTimeout bounds asking the IPFS node who it is.
const ipfsIDTimeout = 10 * time.Second

// Backend is what a worker asks of this machine's backend: the part of
// backend.Backend it uses.
type Backend interface {
	Status(ctx context.Context) (*pb.StatusResponse, error)
	ListModels(ctx context.Context) ([]*pb.ModelInfo, error)
	JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.ClusterNode, error)
	LeaveCluster(ctx context.Context, sessionID string) (bool, error)
	HeldKeys(ctx context.Context, afterSeq uint64, limit uint32) (*pb.HeldKeysResponse, error)
	BlockManifest(ctx context.Context, req *pb.BlockManifestRequest) (*pb.BlockManifestResponse, error)
}

var _ Backend = backend.Backend(nil)

// LocalNode is this machine's opened backend and IPFS node (a
// *localnode.Node).
type LocalNode interface {
	Backend
	// IPFS is the IPFS node the backend stores KV blocks in; nil when none.
	IPFS() *ipfs.Client
}

// Options configure a worker.
type Options struct {
	// DataDir holds the persistent identity (identity.key) and StateFile.
	// Required.
	DataDir string
	// Join is the swarm: its secret and bootstrap members. Required.
	Join p2p.Join
	// Listen are the p2p listen addresses. Default: p2p's (TCP on every
	// interface).
	Listen []ma.Multiaddr
	// NoMDNS turns LAN discovery off.
	NoMDNS bool
	// PricePer1kMicros is the advertised price per 1000 tokens, in
	// millionths of a credit; Region a free-form label.
	PricePer1kMicros uint64
	Region           string
	// Models are the models offered, in this order: the record lists each,
	// loaded or not, and a session's join loads its model on demand (the
	// backend unloads the least recently used idle one when its memory
	// budget needs room). Nil: the models the backend has loaded.
	Models []string
	// MaxSessions bounds the cluster sessions served at once. Default 1.
	MaxSessions uint32
	// RayAddress is the IP a requester's Ray head reaches this machine on.
	// Default: the host's first routable IPv4 (p2p.ReachableIPv4).
	RayAddress string
	// Refresh and RecordTTL time the capability record (p2p's defaults for
	// zero; the TTL must be at least 3x the refresh).
	Refresh, RecordTTL time.Duration
	// Publish, when set and the machine runs an IPFS node, adds the loaded
	// models to it in the background; their directory CIDs go into the
	// record (so others can `model pull` them). Nil: models are not shared.
	Publish PublishFunc
	// AcceptPulls turns on the pull service (/edgellm/pull/1.0.0; worker
	// --accept-pulls): a member that finds no worker to serve a model some
	// peer holds asks this one to pull it with Pull, then serve it. The
	// record says so, with PullDiskBudgetBytes (0: the free disk; Pull
	// enforces it). Needs Pull and the machine's IPFS node.
	AcceptPulls         bool
	PullDiskBudgetBytes uint64
	Pull                PullFunc
	// Logger gets the worker's lines. Default: discarded.
	Logger *slog.Logger
}

// Worker is a running volunteer.
type Worker struct {
	node      *p2p.Node
	clusters  *p2p.ClusterService
	stopKV    func()
	stopShare func()
	pulls     *p2p.PullService // nil: pulls not accepted
	statePath string
	log       *slog.Logger
}

// Start volunteers local to the swarm until Close. ctx bounds the start.
func Start(ctx context.Context, local LocalNode, o Options) (*Worker, error) {
	o = o.withDefaults()
	src := &backendSource{b: local, served: o.Models, price: o.PricePer1kMicros, region: o.Region,
		maxSessions: o.MaxSessions, rayAddress: o.RayAddress,
		acceptPulls: o.AcceptPulls, pullBudget: o.PullDiskBudgetBytes}
	if o.AcceptPulls && (o.Pull == nil || local.IPFS() == nil) {
		return nil, fmt.Errorf("%w: accepting pulls needs a pull function and an IPFS node", p2p.ErrInvalidConfig)
	}
	if id, ok := ipfsIdentity(ctx, local.IPFS(), o.Logger); ok {
		src.ipfsID, src.ipfsAddrs = id.ID, p2p.LimitIPFSAddrs(id.Addrs)
	}
	node, err := p2p.New(
		p2p.WithDataDir(o.DataDir), p2p.WithSecret(o.Join.Secret), p2p.WithListenAddrs(o.Listen...),
		p2p.WithBootstrap(o.Join.Bootstrap...), p2p.WithMDNS(!o.NoMDNS), p2p.WithCapabilitySource(src),
		p2p.WithRecordTiming(o.Refresh, o.RecordTTL), p2p.WithLogger(o.Logger),
	)
	if err != nil {
		return nil, err
	}
	rayAddress := o.RayAddress
	if rayAddress == "" {
		rayAddress = p2p.ReachableIPv4(node.Host().Addrs())
	}
	clusters, err := p2p.NewClusterService(node.Host(),
		p2p.WithSessionHandler(&clusterHandler{b: local, bindIP: rayAddress, log: o.Logger}),
		p2p.WithClusterSource(src), p2p.WithClusterLogger(o.Logger),
		// A requester right after another one must see this worker free again.
		p2p.WithSessionsChanged(node.Republish))
	if err != nil {
		node.Close()
		return nil, err
	}
	src.serve(rayAddress, clusters.ActiveSessions)
	w := &Worker{node: node, clusters: clusters, stopKV: func() {}, stopShare: func() {}, log: o.Logger,
		statePath: filepath.Join(o.DataDir, StateFile)}
	if local.IPFS() != nil {
		caps := src.caps()
		w.stopKV = serveKV(node, local, caps.IPFSDialAddrs(), o.Logger)
		if o.Publish != nil {
			// Not bounded by ctx, which bounds only the start.
			w.stopShare = shareModels(context.Background(), src, node, o.Publish, o.Logger)
		}
	}
	if o.AcceptPulls {
		h := &pullHandler{src: src, node: node, pull: o.Pull, publish: o.Publish, log: o.Logger}
		if w.pulls, err = p2p.NewPullService(node.Host(), h, 0, o.Logger); err != nil {
			w.stopShare()
			w.stopKV()
			clusters.Close()
			node.Close()
			return nil, err
		}
	}
	if err := writeState(w.statePath, node, src, local.IPFS()); err != nil {
		o.Logger.Warn("worker state file", "err", err)
	}
	return w, nil
}

func (o Options) withDefaults() Options {
	if o.MaxSessions == 0 {
		o.MaxSessions = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ipfsIdentity asks the IPFS node for its peer id and addresses; false
// (with a warning in the log) when there is none or it does not answer.
func ipfsIdentity(ctx context.Context, c *ipfs.Client, log *slog.Logger) (ipfs.Identity, bool) {
	if c == nil {
		return ipfs.Identity{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, ipfsIDTimeout)
	defer cancel()
	id, err := c.ID(ctx)
	if err != nil {
		log.Warn("the IPFS node did not say its id; the record carries no IPFS node", "err", err)
		return ipfs.Identity{}, false
	}
	return id, true
}

// Node is the worker's p2p node, for discovery through the same host.
func (w *Worker) Node() *p2p.Node { return w.node }

// Close leaves the swarm: the cluster sessions end (each leaves its Ray
// cluster), the KV service stops, a signed withdrawal is published (bounded
// by ctx), the network closes and the state file goes. Failures are logged.
func (w *Worker) Close(ctx context.Context) {
	if w.pulls != nil {
		w.pulls.Close() // cancels a pull under way
	}
	w.stopShare()
	if err := w.clusters.Close(); err != nil {
		w.log.Warn("ending cluster sessions", "err", err)
	}
	w.stopKV()
	if err := w.node.Leave(ctx); err != nil {
		w.log.Warn("withdrawal not published everywhere; the record will expire", "err", err)
	}
	if err := w.node.Close(); err != nil {
		w.log.Warn("closing the network", "err", err)
	}
	_ = os.Remove(w.statePath)
}
