package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/p2p"
)

const peersLong = `List the swarm's live workers with their signed capabilities and the round-trip
time measured now (libp2p ping). --model keeps the workers serving that model
(a short id or a weights CID).

The command joins the swarm as a short-lived client with a throwaway identity
(from --join, else <data-dir>/swarm.join), looks workers up in the DHT and on
the LAN, reads each record directly from its worker (or from the DHT when the
worker cannot be reached), and repeats the search until two rounds agree or
--timeout passes.

--json prints a list of objects: peer_id, addrs, models (id, weights_cid,
num_layers, layer_ranges, loaded, load_ms), device, backend_version, memory_total_bytes,
memory_free_bytes, prefill_tokens_per_s, decode_tokens_per_s, active_sessions,
max_sessions, price_per_1k_tokens, region, ray_address, ipfs_peer_id and
ipfs_addrs (the worker's IPFS node; "" and [] when it runs none), rtt_ms
(null when not measured), seq, expires, source ("direct" or "dht").
A model's dir_cid is its directory in the worker's IPFS node (what model pull
fetches; "" until the worker has added it).`

type peersOptions struct {
	swarm   swarmFlags
	model   string
	json    bool
	timeout time.Duration
}

func newPeersCommand(app *App) *cobra.Command {
	o := &peersOptions{}
	cmd := &cobra.Command{
		Use:   "peers [--model ID] [--json]",
		Short: "List the swarm's workers, their capabilities and RTTs",
		Long:  peersLong,
		Args:  usageArgs(cobra.NoArgs),
		RunE:  func(cmd *cobra.Command, _ []string) error { return app.runPeers(cmd, o) },
	}
	o.swarm.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.model, "model", "", "only workers serving this model id or weights CID")
	f.BoolVar(&o.json, "json", false, "print a JSON list")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "longest time to search")
	return cmd
}

func (app *App) runPeers(cmd *cobra.Command, o *peersOptions) error {
	if o.timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", ErrInvalidArgument)
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	peers, err := app.lookupRecords(cfg, o.swarm, o.timeout, o.model)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(app.stdout, toPeersJSON(peers))
	}
	return app.printPeers(peers)
}

// lookupRecords joins the swarm as a short-lived client (a throwaway
// identity, no listen address), reads the settled capability records of
// the workers serving model ("" for every worker) within timeout, and
// leaves: what `peers` prints and `model pull` chooses holders from.
func (app *App) lookupRecords(cfg *config.Config, swarm swarmFlags, timeout time.Duration, model string) ([]p2p.PeerInfo, error) {
	join, err := swarm.resolve(cfg, app.stdin)
	if err != nil {
		return nil, err
	}
	node, err := app.clientNode(join, nil, swarm.noMDNS, timeout)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	ctx, cancel := context.WithTimeout(app.interrupt, timeout)
	defer cancel()
	peers := node.LookupSettled(ctx, model)
	if app.interrupt.Err() != nil {
		return nil, ErrInterrupted
	}
	return peers, nil
}

type peerModelJSON struct {
	ID          string      `json:"id"`
	WeightsCID  string      `json:"weights_cid"`
	DirCID      string      `json:"dir_cid"`
	NumLayers   uint32      `json:"num_layers"`
	LayerRanges [][2]uint32 `json:"layer_ranges"`
	// Loaded is false for a model the worker loads on demand; LoadMs its
	// last load there (0 = unknown).
	Loaded bool  `json:"loaded"`
	LoadMs int64 `json:"load_ms"`
}

type peerJSON struct {
	PeerID            string          `json:"peer_id"`
	Addrs             []string        `json:"addrs"`
	Models            []peerModelJSON `json:"models"`
	Device            string          `json:"device"`
	Engine            string          `json:"engine"`
	BackendVersion    string          `json:"backend_version"`
	MemoryTotalBytes  uint64          `json:"memory_total_bytes"`
	MemoryFreeBytes   uint64          `json:"memory_free_bytes"`
	PrefillTokensPerS float64         `json:"prefill_tokens_per_s"`
	DecodeTokensPerS  float64         `json:"decode_tokens_per_s"`
	ActiveSessions    uint32          `json:"active_sessions"`
	MaxSessions       uint32          `json:"max_sessions"`
	PricePer1kTokens  float64         `json:"price_per_1k_tokens"`
	Region            string          `json:"region"`
	RayAddress        string          `json:"ray_address"`
	IPFSPeerID        string          `json:"ipfs_peer_id"`
	IPFSAddrs         []string        `json:"ipfs_addrs"`
	// AcceptPulls: the worker pulls models members ask for (worker
	// --accept-pulls), up to PullDiskBudgetBytes (0: its free disk).
	AcceptPulls         bool     `json:"accept_pulls"`
	PullDiskBudgetBytes uint64   `json:"pull_disk_budget_bytes"`
	RTTMs               *float64 `json:"rtt_ms"`
	Seq                 uint64   `json:"seq"`
	Expires             string   `json:"expires"`
	Source              string   `json:"source"`
}

func toPeersJSON(ps []p2p.PeerInfo) []peerJSON {
	out := make([]peerJSON, 0, len(ps))
	for _, p := range ps {
		r := p.Record
		j := peerJSON{
			PeerID: r.PeerID.String(), Addrs: []string{}, Models: []peerModelJSON{}, Device: r.Device, Engine: r.Engine,
			BackendVersion: r.BackendVersion, MemoryTotalBytes: r.MemoryTotalBytes, MemoryFreeBytes: r.MemoryFreeBytes,
			PrefillTokensPerS: r.PrefillTokensPerS, DecodeTokensPerS: r.DecodeTokensPerS,
			ActiveSessions: r.ActiveSessions, MaxSessions: r.MaxSessions,
			PricePer1kTokens: float64(r.PricePer1kMicros) / 1e6, Region: r.Region, RayAddress: r.RayAddress,
			Seq: r.Seq, Expires: r.Expires.UTC().Format(time.RFC3339), Source: "dht",
			IPFSAddrs: []string{}, AcceptPulls: r.AcceptPulls, PullDiskBudgetBytes: r.PullDiskBudgetBytes,
		}
		if r.IPFSPeerID != "" {
			j.IPFSPeerID = r.IPFSPeerID.String()
		}
		for _, a := range r.IPFSAddrs {
			j.IPFSAddrs = append(j.IPFSAddrs, a.String())
		}
		if p.Direct {
			j.Source = "direct"
		}
		if p.RTT > 0 {
			ms := float64(p.RTT.Microseconds()) / 1000
			j.RTTMs = &ms
		}
		for _, a := range r.Addrs {
			j.Addrs = append(j.Addrs, a.String())
		}
		for _, m := range r.Models {
			pm := peerModelJSON{ID: m.ID, WeightsCID: m.WeightsCID, NumLayers: m.NumLayers, LayerRanges: [][2]uint32{},
				Loaded: !m.Unloaded, LoadMs: m.LoadTime.Milliseconds()}
			for _, lr := range m.LayerRanges {
				pm.LayerRanges = append(pm.LayerRanges, [2]uint32{lr.Start, lr.End})
			}
			pm.DirCID = m.DirCID
			j.Models = append(j.Models, pm)
		}
		out = append(out, j)
	}
	return out
}

func (app *App) printPeers(ps []p2p.PeerInfo) error {
	if len(ps) == 0 {
		fmt.Fprintln(app.stderr, "No workers found.")
		return nil
	}
	tw := tabwriter.NewWriter(app.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tDEVICE\tMODELS\tDECODE TOK/S\tRTT\tLOAD\tPRICE/1K\tREGION\tIPFS NODE")
	for _, p := range ps {
		r := p.Record
		var models []string
		for _, m := range r.Models {
			models = append(models, m.ID)
		}
		slices.Sort(models)
		rtt := "-"
		if p.RTT > 0 {
			rtt = p.RTT.Round(10 * time.Microsecond).String()
		}
		region := r.Region
		if region == "" {
			region = "-"
		}
		ipfsNode := "-"
		if r.IPFSPeerID != "" {
			ipfsNode = r.IPFSPeerID.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%d/%d\t%.6g\t%s\t%s\n", r.PeerID, r.Device, strings.Join(models, ","),
			r.DecodeTokensPerS, rtt, r.ActiveSessions, r.MaxSessions, float64(r.PricePer1kMicros)/1e6, region, ipfsNode)
	}
	return tw.Flush()
}
