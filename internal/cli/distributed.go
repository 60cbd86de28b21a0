package cli

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Distributed inference: infer with a swarm configured runs the model across
// the swarm's workers (internal/requester; swarm_cluster.go assembles it).
// This file is infer's swarm flags and what a distributed run prints: one
// line per stage on stderr once every worker has joined, the streamed
// answer, and infer --json's stages.

// distOptions are infer's flags for the distributed mode.
type distOptions struct {
	swarm       swarmFlags
	local       bool
	stages      int
	maxPrice    float64
	maxLatency  time.Duration
	listen      []string
	rayAddress  string
	discoverFor time.Duration
	trusted     []string
	// Prefill/decode disaggregation (pd.go): both or neither.
	prefillPeer string
	decodePeer  string
	noPD        bool
	// prompt, when set, is looked up in the swarm's KV cache before the
	// cluster forms (KV-aware routing; swarm_cluster.go).
	prompt *pb.GenerateRequest
}

func (d *distOptions) register(cmd *cobra.Command) {
	d.swarm.register(cmd)
	f := cmd.Flags()
	f.BoolVar(&d.local, "local", false, "run on this machine even when a swarm is configured")
	f.IntVar(&d.stages, "stages", 0, "split the model across this many workers (0 = auto: one worker if one can hold it)")
	f.Float64Var(&d.maxPrice, "max-price", 0, "most credits per 1000 tokens the plan may cost (0 = no limit)")
	f.DurationVar(&d.maxLatency, "max-latency", 0, "most expected latency per token, e.g. 200ms (0 = no limit)")
	f.StringSliceVar(&d.listen, "listen", nil, "listen multiaddrs of this node, comma-separated (default /ip4/0.0.0.0/tcp/0,/ip6/::/tcp/0)")
	f.StringVar(&d.rayAddress, "ray-address", "", "IP the workers reach this machine's Ray head on (default: its first non-loopback IPv4, else 127.0.0.1)")
	f.DurationVar(&d.discoverFor, "discover-timeout", requester.DefaultDiscoverTimeout, "longest time to look for workers")
	registerTrustedPeers(f, &d.trusted)
	d.registerPD(cmd)
}

// swarmConfigured reports whether infer should use the swarm: --join given
// or <data-dir>/swarm.join present, and --local not given.
func (d *distOptions) swarmConfigured(cfg *config.Config) bool {
	if d.disaggregated() {
		return true // named workers: validate refuses them with --local
	}
	if d.local {
		return false
	}
	if d.swarm.given() {
		return true
	}
	_, err := os.Stat(filepath.Join(cfg.DataDir, joinFile))
	return err == nil
}

func (d *distOptions) validate() error {
	switch {
	case d.stages < 0 || d.stages > 1024:
		return fmt.Errorf("%w: --stages must be between 0 and 1024", ErrInvalidArgument)
	case d.maxPrice < 0 || d.maxPrice > 1e9 || d.maxPrice != d.maxPrice:
		return fmt.Errorf("%w: --max-price must be between 0 and 1e9", ErrInvalidArgument)
	case d.maxLatency < 0:
		return fmt.Errorf("%w: --max-latency must not be negative", ErrInvalidArgument)
	case d.discoverFor <= 0:
		return fmt.Errorf("%w: --discover-timeout must be positive", ErrInvalidArgument)
	case d.rayAddress != "" && net.ParseIP(d.rayAddress) == nil:
		return fmt.Errorf("%w: --ray-address must be an IP address", ErrInvalidArgument)
	}
	if err := checkTrustedPeers(d.trusted); err != nil {
		return err
	}
	return d.validatePD()
}

// request is the requester's request for model under the flags.
func (d *distOptions) request(model string) requester.Request {
	return requester.Request{
		Model: model, Stages: d.stages, MaxTokenLatency: d.maxLatency,
		MaxPricePer1kMicros: uint64(d.maxPrice*1e6 + 0.5),
		PrefillPeer:         d.prefillPeer, DecodePeer: d.decodePeer, NoPD: d.noPD,
		DiscoverTimeout: d.discoverFor, RayAddress: d.rayAddress, TrustedPeers: strings.Join(d.trusted, ","),
		AnswerTokens: int(d.prompt.GetSampling().GetMaxTokens()),
	}
}

// stageJSON is one stage in infer --json's "stages".
type stageJSON struct {
	PeerID     string   `json:"peer_id"`
	LayerStart int      `json:"layer_start"`
	LayerEnd   int      `json:"layer_end"`
	RayAddress string   `json:"ray_address"`
	RTTMs      *float64 `json:"rtt_ms"`
	// Role is "prefill" or "decode" in a P/D run (pd.go); absent for a pipeline stage.
	Role string `json:"role,omitempty"`
}

// toStagesJSON is a cluster's stages in infer --json's shape.
func toStagesJSON(stages []requester.Stage) []stageJSON {
	out := make([]stageJSON, 0, len(stages))
	for _, s := range stages {
		sj := stageJSON{PeerID: s.PeerID, LayerStart: s.Start, LayerEnd: s.End, RayAddress: s.RayAddress, Role: roleName(s.Role)}
		if s.RTT > 0 {
			ms := float64(s.RTT.Microseconds()) / 1000
			sj.RTTMs = &ms
		}
		out = append(out, sj)
	}
	return out
}

// runDistributed answers the prompt across the swarm: form the cluster
// (discover, plan, Ray head, workers join), generate with failover, tear
// down; Ctrl-C ends all of it.
func (app *App) runDistributed(cmd *cobra.Command, o *inferOptions, cfg *config.Config, req *pb.GenerateRequest) error {
	ctx, cancel := app.withInterrupt(cmd.Context())
	defer cancel()
	o.dist.prompt = req
	c, err := app.formCluster(ctx, cfg, o.model, &o.dist, requester.OnFailover(app.warn))
	if err != nil {
		return err
	}
	defer c.Close()
	if !o.json {
		plan := c.Plan()
		for i, s := range c.Cluster.Stages() {
			fmt.Fprintln(app.stderr, stageLine(i, len(plan.Stages), s, plan.NumLayers))
		}
	}
	res := &inferResult{Model: c.Plan().Model, RequestID: req.GetRequestId(), TokenIDs: []uint32{}}
	res.CachedFrom, res.Mode = c.cachedFrom, c.mode
	var text strings.Builder
	err = c.Generate(ctx, req, func(resp *pb.GenerateResponse) error {
		res.record(resp, &text)
		if o.json || resp.GetText() == "" {
			return nil
		}
		_, err := io.WriteString(app.stdout, resp.GetText()) // unbuffered: one write per token
		return err
	})
	if !o.json && (err == nil || text.Len() > 0) {
		fmt.Fprintln(app.stdout)
	}
	if err != nil {
		return err
	}
	if !o.json {
		return nil
	}
	res.Text = text.String()
	res.Model, res.WeightsCID, res.Stages = c.Plan().Model, c.WeightsCID(), c.Stages()
	res.PhasesMs = c.Phases
	return writeJSON(app.stdout, res)
}

// stageLine is the stderr line of stage i of n: "stage 1/2: layers [0,15)
// of 30 on 12D3… (rtt 0.21 ms)", or "prefill on 12D3…: layers [0,30) of 30
// (rtt …)" in a P/D run.
func stageLine(i, n int, s requester.Stage, numLayers int) string {
	rtt := fmtRTT(s.RTT)
	if role := roleName(s.Role); role != "" {
		return fmt.Sprintf("%s on %s: layers [%d,%d) of %d (rtt %s)", role, s.PeerID, s.Start, s.End, numLayers, rtt)
	}
	return fmt.Sprintf("stage %d/%d: layers [%d,%d) of %d on %s (rtt %s)", i+1, n, s.Start, s.End, numLayers, s.PeerID, rtt)
}

func fmtRTT(d time.Duration) string {
	if d <= 0 {
		return "not measured"
	}
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
}
