package cli

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// clusterRun is the requester's side of one Ray cluster (DESIGN.md, request
// path steps 1-7): this node, its backend running the Ray head and driving
// the pipeline, and one joined worker per stage of the plan. infer opens one
// per request; a session keeps one for several. Generate may be called again
// after it returns; concurrent calls run one after the other (the backend
// drives one generation per cluster at a time).
type clusterRun struct {
	app   *App
	d     *distOptions
	model string

	node   *p2p.Node
	b      backend.Backend
	sid    p2p.SessionID
	token  p2p.RayToken
	head   string // the Ray head's address, as workers join it
	client *p2p.ClusterClient

	gen     sync.Mutex // held by Generate
	mu      sync.Mutex // guards plan, rtts and handles (failover replaces them)
	plan    planner.Plan
	rtts    map[string]time.Duration
	handles []*p2p.SessionHandle // one per plan stage, same order

	gone map[string]bool // peers lost (or refusing to take a lost stage) during this run

	// OnFailover, when set, gets the one-line warning of each failover (e.g.
	// "worker 12D3… (layers [15,30)) was lost after 7 tokens; replanned onto
	// 12D3… (layers [15,30)), replaying") instead of stderr, so a session
	// daemon can pass it to its client. Set it before Generate.
	OnFailover func(line string)

	closeOnce sync.Once
	closers   []func() // run in reverse order by Close
}

// openCluster discovers, plans, starts the Ray head and has every stage's
// worker join. On error nothing is left running.
func (app *App) openCluster(ctx context.Context, cfg *config.Config, model string, d *distOptions) (_ *clusterRun, err error) {
	if err := d.validate(); err != nil {
		return nil, err
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
	ctx, cancel := app.withInterrupt(ctx)
	defer cancel()
	opts := []p2p.Option{
		p2p.WithIdentity(key), p2p.WithSecret(join.Secret), p2p.WithBootstrap(join.Bootstrap...),
		p2p.WithMDNS(!d.swarm.noMDNS), p2p.WithLogger(app.log), p2p.WithLookupTimeout(d.discoverFor),
	}
	if len(listen) > 0 {
		opts = append(opts, p2p.WithListenAddrs(listen...))
	}
	node, err := p2p.New(opts...)
	if err != nil {
		return nil, networkError(err)
	}
	c := &clusterRun{app: app, d: d, model: model, node: node, gone: map[string]bool{}}
	c.closers = append(c.closers, func() { node.Close() })
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	// 1. Discover, 2. plan.
	c.plan, c.rtts, err = app.discoverAndPlan(ctx, node, model, d)
	if err != nil {
		return nil, err
	}

	// 4. The Ray head on this machine's backend.
	b, err := app.openNode(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, app.stopped(ctx, "while starting the backend")
		}
		return nil, err
	}
	c.b = b
	c.closers = append(c.closers, func() { app.closeQuietly(b) })
	bindIP := d.rayAddress
	if bindIP == "" {
		bindIP = p2p.ReachableIPv4(node.Host().Addrs())
	}
	c.sid, c.token = p2p.NewSessionID(), p2p.NewRayToken()
	c.closers = append(c.closers, func() { app.leaveHead(b, c.sid) })
	head, err := b.StartClusterHead(ctx, &pb.StartClusterHeadRequest{
		SessionId: c.sid.String(), BindAddress: bindIP, Token: c.token.Hex()})
	if err != nil {
		if ctx.Err() != nil {
			return nil, app.stopped(ctx, "while starting the Ray head")
		}
		return nil, fmt.Errorf("start the Ray head: %w", err)
	}
	c.head = head.GetHeadAddress()

	// 3. Negotiate every stage, in parallel.
	c.client, err = p2p.NewClusterClient(node.Host(), p2p.WithJoinTimeout(clusterJoinTimeout),
		p2p.WithClusterLogger(app.log), p2p.WithLeaveTimeout(teardownTimeout))
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { c.client.Close() }) // leaves every session still open, in parallel
	c.handles, err = app.joinStages(ctx, c.client, c.plan, c.sid, c.token, c.head)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close has every worker leave, stops the head, closes backend and node.
// Idempotent.
func (c *clusterRun) Close() {
	c.closeOnce.Do(func() {
		for i := len(c.closers) - 1; i >= 0; i-- {
			c.closers[i]()
		}
	})
}

// Plan is the current plan (after any failover).
func (c *clusterRun) Plan() planner.Plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plan
}

// Stages is the current plan (after any failover) in infer --json's shape.
func (c *clusterRun) Stages() []stageJSON {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]stageJSON, 0, len(c.plan.Stages))
	roles := c.d.stageRoles(len(c.plan.Stages))
	for i, s := range c.plan.Stages {
		sj := stageJSON{PeerID: s.PeerID, LayerStart: s.Start, LayerEnd: s.End, RayAddress: c.handles[i].RayAddress,
			Role: roleName(roles[i])}
		if rtt := c.rtts[s.PeerID]; rtt > 0 {
			ms := float64(rtt.Microseconds()) / 1000
			sj.RTTMs = &ms
		}
		out = append(out, sj)
	}
	return out
}

// WeightsCID is the CID of the weights the plan runs.
func (c *clusterRun) WeightsCID() string { return c.Plan().WeightsCID }

// backendPlan is the GenerateRequest.Plan for the current stages.
func (c *clusterRun) backendPlan() (*pb.Plan, []*p2p.SessionHandle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stages := make([]backend.PlanStage, len(c.plan.Stages))
	for i, s := range c.plan.Stages {
		stages[i] = backend.PlanStage{Resource: c.handles[i].ResourceName, Start: uint32(s.Start), End: uint32(s.End),
			WeightsCID: c.plan.WeightsCID}
	}
	plan := backend.NewPlan(c.sid.String(), stages)
	c.d.setRoles(plan) // prefill then decode in a P/D run (pd.go)
	return plan, append([]*p2p.SessionHandle(nil), c.handles...)
}

// abortWhenDone sends Abort for the request when ctx ends or the node is
// interrupted, and cancels the stream if it has not ended abortGrace later.
// Call the returned stop once the generation has ended.
func (c *clusterRun) abortWhenDone(ctx context.Context, requestID string, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		case <-c.app.interrupt.Done():
		}
		actx, cancelAbort := context.WithTimeout(context.Background(), abortGrace)
		defer cancelAbort()
		if _, err := c.b.Abort(actx, requestID); err != nil {
			c.app.log.Warn("abort failed; cancelling the stream", "err", err)
			cancel(err)
			return
		}
		select {
		case <-done:
		case <-actx.Done():
			cancel(actx.Err())
		}
	}()
	return func() { close(done) }
}

// withInterrupt is ctx that also ends on Ctrl-C.
func (app *App) withInterrupt(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(app.interrupt, cancel)
	return ctx, func() { stop(); cancel() }
}

// stopped is the error for work cut short while doing what: ErrInterrupted
// on Ctrl-C, else ctx's cause.
func (app *App) stopped(ctx context.Context, what string) error {
	if app.interrupt.Err() != nil {
		return fmt.Errorf("%w: %s", ErrInterrupted, what)
	}
	return fmt.Errorf("%s: %w", what, context.Cause(ctx))
}

// rtt is the measured RTT to peer id (0 when not measured).
func (c *clusterRun) rtt(id string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rtts[id]
}
