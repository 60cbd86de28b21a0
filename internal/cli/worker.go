package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/p2p"
)

// workerStateFile is written while a worker runs: its peer id, addresses and
// a join string through it, for operators and scripts. Removed on exit.
const workerStateFile = "worker.json"

// leaveTimeout bounds the withdrawal on Ctrl-C / SIGTERM.
const leaveTimeout = 10 * time.Second

const workerLong = `Volunteer this machine: start the backend, load the model, join the swarm and
advertise a signed capability record (device, memory, models with their weights
CID and layers, measured speeds, load, price, region) until stopped.

The swarm comes from --join, else from <data-dir>/swarm.join (edgellm swarm
init). Members are found through the join string's bootstrap peers, --bootstrap
and mDNS on the LAN. The record is refreshed every minute and expires after
three; Ctrl-C or SIGTERM leaves gracefully (a signed withdrawal, then the
backend stops) and exits 0. A worker that crashes drops out of others' view when
its record expires.

Listen addresses are TCP multiaddrs (port 0 picks a free port). QUIC is refused:
libp2p cannot protect it with the swarm secret. While running, the worker writes
<data-dir>/worker.json with its peer id, addresses and a join string through it.

The worker also runs an IPFS node (Kubo, see the ipfs: config section) in
the swarm's private IPFS network, listening on the same IPs as --listen at
ipfs.swarm_port; its peer id and addresses go into the record so members
connect their IPFS nodes to it and fetch KV-cache blocks from it. Every few
seconds it announces the KV block keys its backend holds (DHT provider
records, renewed while held) and answers members' requests for manifests of
them (/edgellm/kv/1.0.0), so a prompt prefix computed here is reused anywhere.

Members' infer commands may ask the worker to run layers of the model it serves
(/edgellm/cluster/1.0.0): it then joins the requester's Ray cluster, bound to
--ray-address, as a node offering the resource "peer:<its peer id>", at most
--max-sessions at a time, and leaves it (stopping only the Ray processes it
started) when the requester leaves, is lost, or the worker stops.`

type workerOptions struct {
	swarm       swarmFlags
	listen      []string
	model       string
	price       float64
	label       string
	maxSessions uint32
	rayAddress  string
	refresh     time.Duration
	recordTTL   time.Duration
}

func newWorkerCommand(app *App) *cobra.Command {
	o := &workerOptions{}
	cmd := &cobra.Command{
		Use:   "worker [--join STRING] [--listen ADDRS] [--price P] [--label L]",
		Short: "Join a swarm and serve a model to its members",
		Long:  workerLong,
		Example: `  edgellm worker --join "$(cat join.txt)"
  edgellm worker --listen /ip4/0.0.0.0/tcp/4001 --price 0.5 --label eu-west`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return app.runWorker(cmd, o) },
	}
	o.swarm.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&o.listen, "listen", nil, "listen multiaddrs, comma-separated (default /ip4/0.0.0.0/tcp/0,/ip6/::/tcp/0)")
	f.StringVar(&o.model, "model", "", "model to serve (default $EDGELLM_MODEL, else node.model, else smollm2-135m)")
	f.Float64Var(&o.price, "price", 0, "price per 1000 tokens, in credits (0 = free)")
	f.StringVar(&o.label, "label", "", "region label shown to others, e.g. eu-west")
	f.Uint32Var(&o.maxSessions, "max-sessions", 1, "most inference sessions served at once")
	f.StringVar(&o.rayAddress, "ray-address", "", "address a Ray head should use to reach this machine (default: its first non-loopback IPv4)")
	f.DurationVar(&o.refresh, "refresh", p2p.DefaultRefreshInterval, "how often the capability record is re-published")
	f.DurationVar(&o.recordTTL, "record-ttl", p2p.DefaultRecordTTL, "how long a capability record stays valid (at least 3x --refresh)")
	return cmd
}

func (o *workerOptions) validate() error {
	switch {
	case math.IsNaN(o.price) || math.IsInf(o.price, 0) || o.price < 0 || o.price > 1e9:
		return fmt.Errorf("%w: --price must be between 0 and 1e9", ErrInvalidArgument)
	case len(o.label) > 64 || !utf8.ValidString(o.label):
		return fmt.Errorf("%w: --label must be at most 64 bytes of UTF-8", ErrInvalidArgument)
	case o.maxSessions == 0:
		return fmt.Errorf("%w: --max-sessions must be at least 1", ErrInvalidArgument)
	case len(o.rayAddress) > 255:
		return fmt.Errorf("%w: --ray-address too long", ErrInvalidArgument)
	}
	return nil
}

func parseListen(ss []string) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: --listen %q: %v", ErrUsage, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func (app *App) runWorker(cmd *cobra.Command, o *workerOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	join, err := o.swarm.resolve(cfg)
	if err != nil {
		return err
	}
	listen, err := parseListen(o.listen)
	if err != nil {
		return err
	}
	if o.model == "" {
		o.model = cfg.Node.Model
	}
	// The IPFS node joins the swarm's private IPFS network and listens where
	// the worker does; its id and addresses go into the record.
	b, err := app.openNode(app.interrupt, cfg, localnode.WithSwarm(join.Secret[:], listen))
	if err != nil {
		return err
	}
	defer app.closeQuietly(b)
	info, err := app.loadModel(app.interrupt, b, o.model)
	if err != nil {
		return err
	}
	src := &backendSource{b: b, price: uint64(math.Round(o.price * 1e6)), region: o.label,
		maxSessions: o.maxSessions, rayAddress: o.rayAddress}
	src.setIPFS(app.ipfsIdentity(b))
	node, err := p2p.New(
		p2p.WithDataDir(cfg.DataDir), p2p.WithSecret(join.Secret), p2p.WithListenAddrs(listen...),
		p2p.WithBootstrap(join.Bootstrap...), p2p.WithMDNS(!o.swarm.noMDNS), p2p.WithCapabilitySource(src),
		p2p.WithRecordTiming(o.refresh, o.recordTTL), p2p.WithLogger(app.log),
	)
	if err != nil {
		return networkError(err)
	}
	src.setHostAddrs(node.Host().Addrs())
	clusters, err := p2p.NewClusterService(node.Host(),
		p2p.WithSessionHandler(&clusterHandler{b: b, bindIP: src.rayAddress, log: app.log}),
		p2p.WithClusterSource(src), p2p.WithClusterLogger(app.log),
		// A requester right after another one must see this worker free again.
		p2p.WithSessionsChanged(node.Republish))
	if err != nil {
		node.Close()
		return networkError(err)
	}
	src.sessions = clusters.ActiveSessions
	stopKV := app.serveKV(node, b, src)
	statePath := filepath.Join(cfg.DataDir, workerStateFile)
	ipfsAPI := ""
	if c := b.IPFS(); c != nil {
		ipfsAPI = c.URL()
	}
	if err := writeWorkerState(statePath, node, src, ipfsAPI); err != nil {
		app.log.Warn("worker state file", "err", err)
	}
	defer os.Remove(statePath)
	fmt.Fprintf(app.stderr, "Worker %s joined swarm %s, serving %s (%s). Stop with Ctrl-C.\nOthers can join through this worker with:\n%s\n",
		node.ID(), join.Secret.ID(), info.GetId(), info.GetWeightsCid(), node.JoinString())
	<-app.interrupt.Done()
	fmt.Fprintln(app.stderr, "Leaving the swarm…")
	// Sessions end first (each leaves its Ray cluster), then the network.
	if err := clusters.Close(); err != nil {
		app.log.Warn("ending cluster sessions", "err", err)
	}
	stopKV()
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	if err := node.Leave(ctx); err != nil {
		app.log.Warn("withdrawal not published everywhere; the record will expire", "err", err)
	}
	if err := node.Close(); err != nil {
		app.log.Warn("closing the network", "err", err)
	}
	fmt.Fprintln(app.stderr, "Left the swarm.")
	return nil
}

// networkError marks configuration mistakes (QUIC in a private swarm, bad
// options) as usage errors.
func networkError(err error) error {
	if errors.Is(err, p2p.ErrInvalidConfig) || errors.Is(err, p2p.ErrQUICInPrivateSwarm) {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return fmt.Errorf("network: %w", err)
}

type workerState struct {
	PeerID     string   `json:"peer_id"`
	Addrs      []string `json:"addrs"`
	Join       string   `json:"join"`
	IPFSPeerID string   `json:"ipfs_peer_id,omitempty"`
	IPFSAddrs  []string `json:"ipfs_addrs,omitempty"`
	IPFSAPI    string   `json:"ipfs_api,omitempty"`
}

func writeWorkerState(path string, n *p2p.Node, src *backendSource, ipfsAPI string) error {
	st := workerState{PeerID: n.ID().String(), Join: n.JoinString(), IPFSAPI: ipfsAPI}
	for _, a := range n.P2PAddrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	if src.ipfsID != "" {
		st.IPFSPeerID = src.ipfsID.String()
		for _, a := range src.ipfsAddrs {
			st.IPFSAddrs = append(st.IPFSAddrs, a.String())
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeSecretFile(path, string(data)+"\n")
}

// backendSource adapts the backend's Status to p2p.CapabilitySource: the
// loaded models (each holdable whole), device, memory, measured speeds and
// load, plus the operator's price, label and session limit.
type backendSource struct {
	b           backend.Backend
	price       uint64
	region      string
	maxSessions uint32
	rayAddress  string
	// sessions counts the cluster sessions being served (nil: none).
	sessions func() int
	// ipfsID and ipfsAddrs are this peer's IPFS node ("" and nil: none).
	ipfsID    peer.ID
	ipfsAddrs []ma.Multiaddr
}

// setIPFS records the IPFS node's identity for the capability record.
func (s *backendSource) setIPFS(id ipfs.Identity, ok bool) {
	if ok {
		s.ipfsID, s.ipfsAddrs = id.ID, p2p.LimitIPFSAddrs(id.Addrs)
	}
}

// ipfsIdentity asks the node's IPFS node for its peer id and addresses;
// false (with a warning in the log) when there is none or it does not
// answer: the record then carries no IPFS node.
func (app *App) ipfsIdentity(n *localnode.Node) (ipfs.Identity, bool) {
	c := n.IPFS()
	if c == nil {
		return ipfs.Identity{}, false
	}
	ctx, cancel := context.WithTimeout(app.interrupt, 10*time.Second)
	defer cancel()
	id, err := c.ID(ctx)
	if err != nil {
		app.log.Warn("the IPFS node did not say its id; the record carries no IPFS node", "err", err)
		return ipfs.Identity{}, false
	}
	return id, true
}

var _ p2p.CapabilitySource = (*backendSource)(nil)

// setHostAddrs fills the default Ray address from the host's addresses.
func (s *backendSource) setHostAddrs(addrs []ma.Multiaddr) {
	if s.rayAddress != "" {
		return
	}
	s.rayAddress = p2p.ReachableIPv4(addrs)
}

// Capabilities implements p2p.CapabilitySource.
func (s *backendSource) Capabilities(ctx context.Context) (p2p.Capabilities, error) {
	st, err := s.b.Status(ctx)
	if err != nil {
		return p2p.Capabilities{}, err
	}
	c := p2p.Capabilities{
		BackendVersion: st.GetBackendVersion(), Device: st.GetDevice(),
		MemoryTotalBytes: st.GetMemoryTotalBytes(), MemoryFreeBytes: st.GetMemoryFreeBytes(),
		PrefillTokensPerS: st.GetPrefillTokensPerS(), DecodeTokensPerS: st.GetDecodeTokensPerS(),
		ActiveSessions: st.GetActiveRequests(), MaxSessions: s.maxSessions,
		PricePer1kMicros: s.price, Region: s.region, RayAddress: s.rayAddress,
		IPFSPeerID: s.ipfsID, IPFSAddrs: s.ipfsAddrs,
	}
	if s.sessions != nil { // a worker in a cluster session is busy even between requests
		c.ActiveSessions = max(c.ActiveSessions, uint32(s.sessions()))
	}
	for _, m := range st.GetLoadedModels() {
		md := p2p.Model{
			ID: m.GetId(), WeightsCID: m.GetWeightsCid(), NumLayers: m.GetNumLayers(),
			WeightsBytes: m.GetWeightsBytes(),
		}
		if md.NumLayers > 0 {
			md.LayerRanges = []p2p.LayerRange{{Start: 0, End: md.NumLayers}}
		}
		c.Models = append(c.Models, md)
	}
	return c, nil
}
