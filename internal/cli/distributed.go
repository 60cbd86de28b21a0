package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Distributed inference (DESIGN.md, request path steps 1-7): infer with a
// swarm configured runs the model across the swarm's workers.
//
// Decisions:
//   - The requester hosts no stage itself: its backend starts the Ray head
//     and drives the pipeline (tokenizer, sampling), and every layer runs on
//     a worker. The planner is given workers only, so a plan never names the
//     requester; hosting a stage locally is a later option (the head would be
//     started with peer_resource set).
//   - Discovery lists every live member (not only the model's providers) and
//     lets the planner filter, so an unknown model fails at once with the
//     planner's reason instead of after the whole discovery timeout. Only
//     workers whose record came directly from them (so they are reachable and
//     their RTT was measured) are planned.
//   - A worker lost during generation is replaced and the answer replayed
//     and continued (step 7, failover.go): one warning line on stderr; exit
//     4 only when no other worker can take the lost layers or after
//     maxFailovers failovers.
//   - The cluster is a clusterRun (cluster_run.go): infer opens one per
//     request, a session keeps one across requests. The stage lines are
//     printed once every stage's worker has joined.
//   - The requester's node uses a throwaway identity, as peers does.

const (
	// clusterJoinTimeout is how long a worker may take to join the Ray head
	// (starting Ray on a small machine takes tens of seconds).
	clusterJoinTimeout = 2 * time.Minute
	// teardownTimeout bounds the leave of every stage and of the head.
	teardownTimeout = time.Minute
)

// ErrUnavailable reports that the swarm cannot serve the request now: every
// provider is busy, or a worker was lost mid-generation.
var ErrUnavailable = errors.New("unavailable")

// ErrNotFound reports that nothing in the swarm serves what was asked.
var ErrNotFound = errors.New("not found")

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
	// Prefill/decode disaggregation (pd.go): both or neither.
	prefillPeer string
	decodePeer  string
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
	f.DurationVar(&d.discoverFor, "discover-timeout", 10*time.Second, "longest time to look for workers")
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
	if d.swarm.join != "" {
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
	return d.validatePD()
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

// runDistributed answers the prompt across the swarm: open the cluster
// (discover, plan, negotiate), generate with failover, tear down.
func (app *App) runDistributed(cmd *cobra.Command, o *inferOptions, cfg *config.Config, req *pb.GenerateRequest) error {
	c, err := app.openCluster(cmd.Context(), cfg, o.model, &o.dist)
	if err != nil {
		return err
	}
	defer c.Close()
	if !o.json {
		plan := c.Plan()
		for i, s := range c.Stages() {
			fmt.Fprintln(app.stderr, o.dist.stageLine(i, len(plan.Stages), s, plan.NumLayers, fmtRTT(c.rtt(s.PeerID))))
		}
	}
	res := &inferResult{Model: c.Plan().Model, RequestID: req.GetRequestId(), TokenIDs: []uint32{}}
	var text strings.Builder
	err = c.Generate(cmd.Context(), req, func(resp *pb.GenerateResponse) error {
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
	return writeJSON(app.stdout, res)
}

// discoverAndPlan looks the swarm's workers up and plans the request over
// them; it returns the plan and the measured RTT of each peer.
func (app *App) discoverAndPlan(ctx context.Context, node *p2p.Node, model string, d *distOptions) (planner.Plan, map[string]time.Duration, error) {
	peers, rtts, err := app.discover(ctx, node, d.discoverFor)
	if err != nil {
		return planner.Plan{}, nil, err
	}
	if d.disaggregated() {
		plan, err := planner.ChoosePD(peers, d.planRequest(model), d.prefillPeer, d.decodePeer)
		if err != nil {
			return plan, nil, planError(err, len(peers))
		}
		return plan, rtts, nil
	}
	plan, err := planner.Choose(peers, d.planRequest(model))
	if err != nil {
		return plan, nil, planError(err, len(peers))
	}
	return plan, rtts, nil
}

// discover lists the workers that can be planned (their record came
// directly from them, so they are reachable and their RTT was measured),
// looking for at most timeout.
func (app *App) discover(ctx context.Context, node *p2p.Node, timeout time.Duration) ([]planner.Peer, map[string]time.Duration, error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	found := node.LookupSettled(lctx, "")
	if ctx.Err() != nil {
		return nil, nil, app.stopped(ctx, "while looking for workers")
	}
	var peers []planner.Peer
	rtts := map[string]time.Duration{}
	for _, p := range found {
		if !p.Direct || p.Record.PeerID == node.ID() {
			continue // unreachable now: it could not join a cluster
		}
		peers = append(peers, p2p.PlannerPeer(p.Record, p2p.Observation{
			RTT: p.RTT, LAN: node.OnLAN(p.Record.PeerID)}))
		rtts[p.Record.PeerID.String()] = p.RTT
	}
	return peers, rtts, nil
}

// planRequest is the planner's request for model under the flags' limits.
func (d *distOptions) planRequest(model string) planner.Request {
	return planner.Request{
		Model: model, Stages: d.stages, MaxTokenLatency: d.maxLatency,
		MaxPricePer1kMicros: uint64(d.maxPrice*1e6 + 0.5),
	}
}

// planError maps the planner's refusals to exit codes: a request that cannot
// be satisfied as asked is a usage error (2), a model nobody serves is not
// found (3), busy providers are unavailable (4), other limits fail (1).
func planError(err error, peers int) error {
	switch {
	case errors.Is(err, planner.ErrInvalidRequest), errors.Is(err, planner.ErrTooManyStages):
		return fmt.Errorf("%w: %w", ErrUsage, err)
	case errors.Is(err, planner.ErrDifferentWeights):
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	case errors.Is(err, planner.ErrUnknownPeer):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, planner.ErrNoProvider):
		return fmt.Errorf("%w: %w (%d workers found)", ErrNotFound, err, peers)
	case errors.Is(err, planner.ErrBusy):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// joinStages asks each stage's worker to join the session, all at once. On
// any failure the sessions that were accepted are left (by the client's
// Close) and the first error is returned.
func (app *App) joinStages(ctx context.Context, client *p2p.ClusterClient, plan planner.Plan, sid p2p.SessionID, token p2p.RayToken, head string) ([]*p2p.SessionHandle, error) {
	handles := make([]*p2p.SessionHandle, len(plan.Stages))
	errs := make([]error, len(plan.Stages))
	var wg sync.WaitGroup
	for i, s := range plan.Stages {
		id, err := peer.Decode(s.PeerID)
		if err != nil {
			return nil, fmt.Errorf("plan names a bad peer id %q: %w", s.PeerID, err)
		}
		wg.Go(func() {
			handles[i], errs[i] = client.JoinSession(ctx, id, p2p.JoinRequest{
				SessionID: sid, Model: plan.Model, WeightsCID: plan.WeightsCID,
				Layers:      p2p.LayerRange{Start: uint32(s.Start), End: uint32(s.End)},
				HeadAddress: head, RayToken: token,
			})
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, app.stopped(ctx, "while workers joined")
	}
	for i, err := range errs {
		if err != nil {
			s := plan.Stages[i]
			return nil, fmt.Errorf("%w: worker %s refused layers [%d,%d): %w", ErrUnavailable, s.PeerID, s.Start, s.End, err)
		}
	}
	app.log.Info("cluster formed", "session", sid, "head", head, "stages", len(handles))
	return handles, nil
}

// leaveHead stops the session's Ray head on this machine's backend.
func (app *App) leaveHead(b backend.Backend, sid p2p.SessionID) {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if _, err := b.LeaveCluster(ctx, sid.String()); err != nil {
		app.log.Warn("stopping the Ray head", "session", sid, "err", err)
	}
}

// watchLost cancels the generation, with a *workerLost cause, when a
// worker is lost; stop ends the watch.
func watchLost(handles []*p2p.SessionHandle, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	for _, h := range handles {
		go func() {
			select {
			case <-done:
			case <-h.Lost():
				cancel(&workerLost{h})
			}
		}()
	}
	return func() { close(done) }
}

func fmtRTT(d time.Duration) string {
	if d <= 0 {
		return "not measured"
	}
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
}
