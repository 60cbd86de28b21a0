package requester

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// teardownTimeout bounds stopping the Ray head.
const teardownTimeout = time.Minute

// Cluster is the requester's side of one Ray cluster: the head on the
// caller's backend, driving the pipeline, and one joined worker per stage
// of the plan. It is safe for concurrent use: generations run at once (the
// head's engine decodes them as one batch), failovers one at a time.
type Cluster struct {
	r          *Requester
	head       Head
	req        Request
	sid        p2p.SessionID
	token      p2p.RayToken
	headAddr   string // the Ray head's address, as workers join it
	onFailover func(line string)
	lossGrace  time.Duration // see lostStages
	// knownJoinTimeout bounds a replacement's join chosen from known peers
	// (see knownPeersFor).
	knownJoinTimeout time.Duration

	// fo is held while a failover replaces members (see failover.go,
	// "Concurrent generations"); a generation about to start waits for it.
	fo     sync.Mutex
	gone   map[string]bool // peers lost, or refusing a lost stage, during this cluster's life; under fo
	failed failedOver      // the last failover that gave up; under fo
	// known are the workers the plan was chosen from, found at knownAt: a
	// failover soon after tries them before discovering again (failover.go).
	known   []planner.Peer
	knownAt time.Time

	mu         sync.Mutex // guards what follows (failover replaces plan and members)
	plan       planner.Plan
	rtts       map[string]time.Duration
	members    []Member // one per plan stage, same order
	epoch      int      // bumped by each failover that replaced members
	generating int      // generations running
	closed     bool
	err        error
	done       chan struct{}
}

// failedOver is a failover that gave up on the members of epoch, with its
// error: the other generations that lost the same members return it rather
// than search the swarm again.
type failedOver struct {
	epoch int
	err   error
}

// ClusterOption configures a Cluster.
type ClusterOption func(*Cluster)

// OnFailover receives the one-line warning of each failover, e.g. "worker
// 12D3… (layers [15,30)) was lost after 7 tokens; replanned onto 12D3…
// (layers [15,30)), replaying". Default: only the log has it.
func OnFailover(f func(line string)) ClusterOption {
	return func(c *Cluster) { c.onFailover = f }
}

// Form starts p's Ray head on head (a fresh session id and token, bound to
// the request's RayAddress) and has every stage's worker join it, all at
// once. On error nothing it started is left: the workers that joined leave
// and the head stops. The head backend stays the caller's, as does the
// swarm.
func (r *Requester) Form(ctx context.Context, head Head, p *Planned, opts ...ClusterOption) (*Cluster, error) {
	return r.FormOn(ctx, r.StartHead(ctx, head, p.Request.RayAddress), p, opts...)
}

// StartingHead is a cluster's Ray head starting on the head backend in the
// background. A head does not depend on the plan (only a fresh session id
// and token, and the address to bind), so it can start while the requester
// still plans and routes: a cold split's head start (seconds) runs beside
// the prompt's KV lookup, which waits for the backend's tokenizer. FormOn
// joins a plan's workers to it.
type StartingHead struct {
	head  Head
	sid   p2p.SessionID
	token p2p.RayToken
	done  chan struct{}
	node  *pb.ClusterNode // once done, unless err
	err   error
}

// StartHead starts a Ray head on head, bound to rayAddress (empty: the
// swarm's reachable IP), and returns at once. ctx bounds the start.
func (r *Requester) StartHead(ctx context.Context, head Head, rayAddress string) *StartingHead {
	h := &StartingHead{head: head, sid: p2p.NewSessionID(), token: p2p.NewRayToken(), done: make(chan struct{})}
	bindIP := rayAddress
	if bindIP == "" {
		bindIP = r.swarm.ReachableIP()
	}
	go func() {
		defer close(h.done)
		h.node, h.err = head.StartClusterHead(ctx, &pb.StartClusterHeadRequest{
			SessionId: h.sid.String(), BindAddress: bindIP, Token: h.token.Hex()})
	}()
	return h
}

// FormOn has every stage of p join the head h is starting, all at once, and
// owns h from then on. On error nothing is left: the workers that joined
// leave and the head stops.
func (r *Requester) FormOn(ctx context.Context, h *StartingHead, p *Planned, opts ...ClusterOption) (*Cluster, error) {
	c := &Cluster{
		r: r, head: h.head, req: p.Request, sid: h.sid, token: h.token,
		onFailover: func(string) {}, lossGrace: lossGrace, gone: map[string]bool{},
		plan: p.Plan, rtts: p.RTTs, done: make(chan struct{}),
		known: p.peers, knownAt: time.Now(), knownJoinTimeout: knownJoinTimeout,
	}
	for _, o := range opts {
		o(c)
	}
	<-h.done
	if h.err != nil {
		c.leaveHead()
		if ctx.Err() != nil {
			return nil, cancelled(ctx, "while starting the Ray head")
		}
		return nil, fmt.Errorf("start the Ray head: %w", h.err)
	}
	c.headAddr = h.node.GetHeadAddress()
	var err error
	c.members, err = c.joinAll(ctx)
	if err != nil {
		c.leaveHead()
		return nil, err
	}
	for _, m := range c.members {
		c.watchIdle(m)
	}
	r.log.Info("cluster formed", "session", c.sid, "head", c.headAddr, "stages", len(c.members))
	return c, nil
}

// joinAll has every stage's worker join, in parallel. On any failure the
// workers that joined leave and the first error is returned.
func (c *Cluster) joinAll(ctx context.Context) ([]Member, error) {
	all := make([]int, len(c.plan.Stages))
	for i := range all {
		all[i] = i
	}
	members, errs := c.join(ctx, c.plan, all)
	if ctx.Err() != nil {
		leave(members)
		return nil, cancelled(ctx, "while workers joined")
	}
	for i, err := range errs {
		if err != nil {
			leave(members)
			s := c.plan.Stages[i]
			return nil, fmt.Errorf("%w: worker %s refused layers [%d,%d): %w", ErrUnavailable, s.PeerID, s.Start, s.End, err)
		}
	}
	return members, nil
}

// join has the workers of plan's stages idx join the session, in parallel:
// their members and errors in idx order (a zero Member where refused).
func (c *Cluster) join(ctx context.Context, plan planner.Plan, idx []int) ([]Member, []error) {
	members := make([]Member, len(idx))
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		s := plan.Stages[i]
		wg.Go(func() {
			members[k], errs[k] = c.r.swarm.Join(ctx, s.PeerID, p2p.JoinRequest{
				SessionID: c.sid, Model: plan.Model, WeightsCID: plan.WeightsCID,
				Layers:      p2p.LayerRange{Start: uint32(s.Start), End: uint32(s.End)},
				HeadAddress: c.headAddr, RayToken: c.token,
			})
		})
	}
	wg.Wait()
	return members, errs
}

// leave has every member that joined leave, in parallel.
func leave(members []Member) {
	var wg sync.WaitGroup
	for _, m := range members {
		if m.Session != nil {
			wg.Go(func() { m.Session.Leave(context.Background()) })
		}
	}
	wg.Wait()
}

// leaveHead stops the session's Ray head on the head backend.
func (c *Cluster) leaveHead() {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if _, err := c.head.LeaveCluster(ctx, c.sid.String()); err != nil {
		c.r.log.Warn("stopping the Ray head", "session", c.sid, "err", err)
	}
}

// Close stops the Ray head, then has every worker leave; a generation still
// running fails. Idempotent. The head backend and the swarm stay open. The
// head goes first: its engine's end waits (bounded) for the stages to finish
// storing the prompt's KV blocks, which a worker's leave would cut off.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.failLocked(errClosed)
	members := slices.Clone(c.members)
	c.mu.Unlock()
	c.leaveHead()
	leave(members)
}

// Done is closed once the cluster should be formed afresh: a worker was
// lost while no generation ran (or a generation ended without replacing a
// lost one), or the cluster was closed. Err says why. Until Close, Generate
// still works: it fails over first.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Err is nil while Done is open; then why it closed (errors.Is
// ErrUnavailable).
func (c *Cluster) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// failLocked closes Done with err, once. c.mu is held.
func (c *Cluster) failLocked(err error) {
	if c.err == nil {
		c.err = err
		close(c.done)
	}
}

// watchIdle closes Done when m is lost while no generation runs (a
// generation fails over instead, and its end looks again).
func (c *Cluster) watchIdle(m Member) {
	go func() {
		select {
		case <-m.Session.Lost():
		case <-c.done:
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.generating == 0 {
			c.checkLostLocked()
		}
	}()
}

// checkLostLocked closes Done if a watched member is lost. c.mu is held.
func (c *Cluster) checkLostLocked() {
	for _, i := range c.watched(len(c.members)) {
		if s := c.members[i].Session; isLost(s) {
			c.failLocked(fmt.Errorf("%w: %s was lost: %v", ErrUnavailable, describe(c.plan, []int{i}), s.Err()))
			return
		}
	}
}

// Plan is the current plan (after any failover).
func (c *Cluster) Plan() planner.Plan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plan
}

// WeightsCID is the CID of the weights the plan runs.
func (c *Cluster) WeightsCID() string { return c.Plan().WeightsCID }

// Stage is one worker of the cluster.
type Stage struct {
	PeerID     string
	Start, End int    // the layers [Start, End)
	RayAddress string // the worker's Ray node
	RTT        time.Duration
	// Role is PREFILL or DECODE in a prefill/decode run; unspecified for a
	// pipeline stage.
	Role pb.StageRole
}

// Stages are the current plan's workers (after any failover), in order;
// RTT is the one measured at discovery, 0 when not measured.
func (c *Cluster) Stages() []Stage {
	c.mu.Lock()
	defer c.mu.Unlock()
	roles := c.stageRoles(len(c.plan.Stages))
	out := make([]Stage, 0, len(c.plan.Stages))
	for i, s := range c.plan.Stages {
		out = append(out, Stage{PeerID: s.PeerID, Start: s.Start, End: s.End, RayAddress: c.members[i].RayAddress,
			RTT: c.rtts[s.PeerID], Role: roles[i]})
	}
	return out
}

// backendPlan is the GenerateRequest.Plan for the current stages, the
// members running them and their epoch. It waits for a failover under way,
// so a generation starts on the members that replaced a lost one.
func (c *Cluster) backendPlan() (*pb.Plan, []Member, int) {
	c.fo.Lock() // only waits for a running failover to end
	c.fo.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	stages := make([]backend.PlanStage, len(c.plan.Stages))
	for i, s := range c.plan.Stages {
		stages[i] = backend.PlanStage{Resource: c.members[i].ResourceName, Start: uint32(s.Start), End: uint32(s.End),
			WeightsCID: c.plan.WeightsCID}
	}
	plan := backend.NewPlan(c.sid.String(), stages)
	for i, r := range c.stageRoles(len(plan.GetStages())) {
		plan.Stages[i].Role = r
	}
	return plan, slices.Clone(c.members), c.epoch
}
