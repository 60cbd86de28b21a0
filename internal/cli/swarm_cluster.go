package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// swarmCluster is a cluster infer or a session daemon formed, with the
// throwaway processes it runs on: a client p2p node with an ephemeral
// identity (as peers uses) and this machine's node, whose backend hosts the
// Ray head. Close ends all of them.
type swarmCluster struct {
	*requester.Cluster
	closers []func() // run in reverse order by Close
	// Phases: milliseconds of forming it, by phase (node_start overlaps
	// discover_plan; node_ready is when both were done; prefix_lookup
	// overlaps ray_head_and_joins, both counted from the head's start).
	Phases map[string]float64
	// index and keyer find a prompt's cached prefix in the swarm.
	index requester.PrefixIndex
	keyer requester.PromptKeyer
	// cachedFrom are the peers holding the prompt's cached prefix (infer
	// --json's cached_from).
	cachedFrom []string
	// mode is infer --json's mode: pipeline, pd (forced) or pd_planner.
	mode string
}

// formCluster forms a cluster for model under d's flags: join the swarm,
// discover and plan while this machine's node (Kubo and the backend that
// heads the Ray cluster) starts, then form the cluster on it. The two
// overlap because neither needs the other and each takes seconds on a cold
// start; a request the swarm cannot serve stops the node's start and fails.
// On error nothing is left running. Phases records how long each part took.
func (app *App) formCluster(ctx context.Context, cfg *config.Config, model string, d *distOptions,
	opts ...requester.ClusterOption) (_ *swarmCluster, err error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	join, err := d.swarm.resolve(cfg, app.stdin)
	if err != nil {
		return nil, err
	}
	listen, err := parseListen(d.listen)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	local := app.startNode(ctx, cfg)
	defer func() {
		if err != nil {
			local.discard()
		}
	}()
	node, err := app.clientNode(join, listen, d.swarm.noMDNS, d.discoverFor)
	if err != nil {
		return nil, err
	}
	c := &swarmCluster{closers: []func(){func() { node.Close() }}, Phases: map[string]float64{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	swarm, err := requester.NewSwarm(node, app.log)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { swarm.Close() })
	r := requester.New(swarm, requester.WithLogger(app.log))
	planned, err := r.Plan(ctx, d.request(model))
	if err != nil {
		return nil, planError(err)
	}
	c.Phases["discover_plan"] = sinceMs(started)
	n, err := local.wait()
	if err != nil {
		return nil, err
	}
	c.Phases["node_start"] = local.ms
	c.Phases["node_ready"] = sinceMs(started)
	c.closers = append(c.closers, func() { app.closeQuietly(n) })
	c.index, c.keyer = swarm, n
	// The Ray head starts while the prompt's KV lookup routes the plan: the
	// head is the same whichever workers join it, and the lookup waits for
	// the backend's tokenizer (its first import, seconds on a cold start).
	formed := time.Now()
	head := r.StartHead(ctx, n, planned.Request.RayAddress)
	if d.prompt != nil {
		planned = c.preferHolders(ctx, app.log, r, planned, d.prompt)
		c.Phases["prefix_lookup"] = sinceMs(formed)
	}
	c.mode = modeOf(planned, d)
	c.Cluster, err = r.FormOn(ctx, head, planned, opts...)
	if err != nil {
		return nil, err
	}
	c.Phases["ray_head_and_joins"] = sinceMs(formed)
	c.closers = append(c.closers, c.Cluster.Close)
	return c, nil
}

// pendingNode is this machine's node starting in the background.
type pendingNode struct {
	cancel context.CancelFunc
	done   chan struct{}
	node   *localnode.Node
	err    error
	ms     float64 // how long the start took
	taken  bool
	app    *App
}

// startNode starts this machine's node (app.openNode) in the background.
func (app *App) startNode(ctx context.Context, cfg *config.Config) *pendingNode {
	ctx, cancel := context.WithCancel(ctx)
	p := &pendingNode{cancel: cancel, done: make(chan struct{}), app: app}
	go func() {
		defer close(p.done)
		started := time.Now()
		p.node, p.err = app.openNode(ctx, cfg)
		p.ms = sinceMs(started)
	}()
	return p
}

// wait returns the started node; the caller closes it from then on. (The
// node's processes outlive the start's context: it bounds the start only.)
func (p *pendingNode) wait() (*localnode.Node, error) {
	<-p.done
	p.cancel()
	p.taken = p.err == nil
	return p.node, p.err
}

// discard stops a start whose node nobody took and closes what it opened.
func (p *pendingNode) discard() {
	if p.taken {
		return
	}
	p.cancel()
	<-p.done
	if p.err == nil && p.node != nil {
		p.app.closeQuietly(p.node)
	}
}

func sinceMs(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

// planError keeps a plan the flags make impossible (more stages than
// workers) the usage error it has always been.
func planError(err error) error {
	if errors.Is(err, planner.ErrTooManyStages) || errors.Is(err, planner.ErrInvalidRequest) {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return err
}

// Close has every worker leave, stops the head, closes the backend and
// the node. Idempotent.
func (c *swarmCluster) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// preferHolders routes req by the swarm's KV cache (KV-aware routing, the
// same code path as serve's: requester.LookupPrefix, Requester.Route): the
// manifest goes into req for the stages to fetch their layers' blocks, the
// plan is re-ranked so the holders win by the prefill time they save, and,
// knowing the prompt's length, the planner may choose a prefill/decode run
// (not with --no-pd). A failed lookup costs a debug line and keeps the plan.
func (c *swarmCluster) preferHolders(ctx context.Context, log *slog.Logger, r *requester.Requester,
	planned *requester.Planned, req *pb.GenerateRequest) *requester.Planned {
	prefix, err := requester.LookupPrefix(ctx, c.index, c.keyer, req, nil)
	if err != nil {
		log.Debug("kv: no cached prefix from the swarm", "err", err)
	} else {
		log.Info("kv: cached prefix found in the swarm", "peers", prefix.Holders, "blocks", prefix.Blocks)
		c.cachedFrom = append(c.cachedFrom, prefix.HolderIDs()...)
	}
	chosen := r.Route(planned, prefix, int(req.GetSampling().GetMaxTokens()))
	if chosen.Request.PrefillPeer != "" && chosen.Request.PrefillPeer != planned.Request.PrefillPeer {
		log.Info("planner: prefill/decode pays for this prompt", "prefill", chosen.Request.PrefillPeer,
			"decode", chosen.Request.DecodePeer, "prompt_tokens", prefix.PromptTokens)
	}
	return chosen
}

// modeOf names how planned came to be, for infer --json's mode.
func modeOf(planned *requester.Planned, d *distOptions) string {
	switch {
	case planned.Request.PrefillPeer == "":
		return "pipeline"
	case d.prefillPeer != "":
		return "pd"
	}
	return "pd_planner"
}

// Stages are the cluster's stages in infer --json's shape.
func (c *swarmCluster) Stages() []stageJSON { return toStagesJSON(c.Cluster.Stages()) }

// withInterrupt is ctx that also ends on Ctrl-C.
func (app *App) withInterrupt(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(app.interrupt, cancel)
	return ctx, func() { stop(); cancel() }
}
