package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// DefaultClusterIdle closes a warm cluster nobody used for this long (the
// workers it holds are volunteers' machines).
const DefaultClusterIdle = 10 * time.Minute

// clusterFormer plans and forms a cluster for a request: requesterFormer
// over the requester runtime; a fake in the pool's unit tests.
type clusterFormer interface {
	form(ctx context.Context, req requester.Request, hint routeHint, onFailover func(line string)) (formedCluster, error)
}

// routeHint is what the request that forms a cluster tells its plan: the
// prompt's cached prefix in the swarm (holders, prompt length) and the
// answer's length, for requester.Route.
type routeHint struct {
	prefix requester.Prefix
	answer int
}

// formedCluster is what the pool keeps warm: a *requester.Cluster.
type formedCluster interface {
	Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error
	Done() <-chan struct{}
	Err() error
	Close()
	Stages() []requester.Stage
}

// requesterFormer forms clusters with the requester runtime, headed by this
// node's backend.
type requesterFormer struct {
	r    *requester.Requester
	head requester.Head
}

func (f requesterFormer) form(ctx context.Context, req requester.Request, hint routeHint, onFailover func(string)) (formedCluster, error) {
	planned, err := f.r.Plan(ctx, req)
	if err != nil {
		return nil, err
	}
	planned = f.r.Route(planned, hint.prefix, hint.answer)
	return f.r.Form(ctx, f.head, planned, requester.OnFailover(onFailover))
}

// warmCluster is a formed cluster and the model it runs.
type warmCluster struct {
	model  string
	c      formedCluster
	broken bool // a generation failed on it: the next request forms anew; under clusterPool.mu
}

// clusterPool keeps at most one formed cluster warm between requests (this
// node's backend heads one Ray cluster at a time) and runs swarm
// generations on it.
//
// Decisions:
//   - Generations run at once on the warm cluster (each holds turn shared),
//     so the head's engine batches them (continuous batching through the
//     Ray pipeline); their failovers are the cluster's own, per generation
//     (requester.Cluster.Generate).
//   - Forming a cluster, replacing it with another model's and closing it
//     hold turn alone: they wait for the generations on the old one to end,
//     and requests arriving meanwhile wait for the new one (sync.RWMutex
//     lets no new reader in while a writer waits).
//   - A generation that breaks the cluster marks it broken rather than
//     closing it under the others still running on it; the next request
//     (or a drop that waits for them) replaces it.
type clusterPool struct {
	former   clusterFormer
	template requester.Request // the plan's limits; Model is set per request
	idle     time.Duration
	log      *slog.Logger
	onOpen   func(open bool) // the open-clusters gauge
	// onStages, when set, gets the stages of the cluster a generation runs
	// on, before it starts (the console's "last request" trace).
	onStages func(req *pb.GenerateRequest, stages []requester.Stage)

	turn sync.RWMutex // shared by running generations; alone while forming or dropping

	mu      sync.Mutex
	cur     *warmCluster
	running int // generations on cur
	timer   *time.Timer
}

// generate runs req on the warm cluster for its model, forming one first
// when there is none (or it went bad), planned for prefix (req's prompt in
// the swarm's KV cache, see Service.lookupPrefix); the route is "pipeline"
// or "pd".
//
// Decision: a warm cluster is kept for a request whose prefix other peers
// hold: forming another costs seconds (Ray joins, weights loaded) where the
// warm stages fetch the holders' blocks through req's manifest; the holders
// rank higher when a cluster is formed.
func (p *clusterPool) generate(ctx context.Context, req *pb.GenerateRequest, prefix requester.Prefix,
	onResp func(*pb.GenerateResponse) error) (string, error) {
	wc, err := p.enter(ctx, req.GetModel(), routeHint{prefix: prefix, answer: int(req.GetSampling().GetMaxTokens())})
	if err != nil {
		return routeOf(p.template), err
	}
	stages := wc.c.Stages()
	if p.onStages != nil {
		p.onStages(req, stages)
	}
	err = wc.c.Generate(ctx, req, onResp)
	broken := brokenBy(ctx, err)
	p.leave(wc, broken)
	if broken {
		// The cluster failed under a request that was neither cancelled nor
		// bad (its failover gave up, or this node's backend restarted and
		// lost the Ray head): it closes once the others on it end, and the
		// next request forms a new one.
		go p.dropAlone(wc, fmt.Sprintf("a generation failed on it: %v", err))
	}
	return routeOfStages(stages), err
}

// brokenBy reports whether err, from a generation under ctx, says the
// cluster itself is broken: not the caller leaving, not the request's own
// fault (INVALID_ARGUMENT, NOT_FOUND), not the caller's callback.
func brokenBy(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || errors.Is(err, requester.ErrCancelled) {
		return false
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.Canceled:
		return false
	}
	return true
}

// enter returns the warm cluster for model with p.turn held shared (leave
// releases it), forming the cluster first, alone, when there is none.
func (p *clusterPool) enter(ctx context.Context, model string, hint routeHint) (*warmCluster, error) {
	for {
		p.turn.RLock()
		if wc := p.take(model); wc != nil {
			return wc, nil
		}
		p.turn.RUnlock()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", requester.ErrCancelled, err)
		}
		p.turn.Lock()
		_, err := p.acquire(ctx, model, hint)
		p.turn.Unlock()
		if err != nil {
			return nil, err
		}
		// Shared again to run: another model's request may have taken the
		// head in between, then this one forms again.
	}
}

// take counts a generation on the current cluster when it runs model and
// is sound; nil otherwise.
func (p *clusterPool) take(model string) *warmCluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.cur
	if cur == nil || cur.model != model || cur.broken || cur.c.Err() != nil {
		return nil
	}
	p.running++
	if p.timer != nil {
		p.timer.Stop()
	}
	return cur
}

// leave ends a generation on wc (marking wc broken when it broke it) and
// releases p.turn; the last one out starts the idle clock.
func (p *clusterPool) leave(wc *warmCluster, broken bool) {
	defer p.turn.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running--
	wc.broken = wc.broken || broken
	if p.cur == wc && p.running == 0 && !wc.broken {
		p.timer = time.AfterFunc(p.idle, func() { p.closeIdle(wc) })
	}
}

// acquire makes the warm cluster one for model, forming it when needed.
// p.turn is held alone.
func (p *clusterPool) acquire(ctx context.Context, model string, hint routeHint) (*warmCluster, error) {
	p.mu.Lock()
	cur := p.cur
	sound := cur != nil && cur.model == model && !cur.broken && cur.c.Err() == nil
	p.mu.Unlock()
	if sound {
		return cur, nil
	}
	if cur != nil {
		p.drop(cur, "it went bad, or another model's plan asked for the head")
	}
	req := p.template
	req.Model = model
	c, err := p.former.form(ctx, req, hint, func(line string) { p.log.Warn("failover", "model", model, "detail", line) })
	if err != nil {
		return nil, err
	}
	wc := &warmCluster{model: model, c: c}
	p.mu.Lock()
	p.cur = wc
	p.timer = time.AfterFunc(p.idle, func() { p.closeIdle(wc) })
	p.mu.Unlock()
	p.onOpen(true)
	go p.watch(wc)
	p.log.Info("cluster formed", "model", model)
	return wc, nil
}

// closeIdle closes wc after its idle timeout unless a generation holds it.
func (p *clusterPool) closeIdle(wc *warmCluster) {
	if !p.turn.TryLock() {
		return // in use: the last generation's leave re-arms the clock
	}
	defer p.turn.Unlock()
	p.drop(wc, fmt.Sprintf("idle for %s", p.idle))
}

// watch drops wc when it goes bad (a member lost while idle, or a
// generation's failover gave up).
func (p *clusterPool) watch(wc *warmCluster) {
	<-wc.c.Done()
	p.mu.Lock()
	current := p.cur == wc
	p.mu.Unlock()
	if current {
		p.log.Info("warm cluster went bad", "model", wc.model, "err", wc.c.Err())
		p.dropAlone(wc, "a member was lost")
	}
}

// dropAlone drops wc once no generation runs (p.turn held alone).
func (p *clusterPool) dropAlone(wc *warmCluster, why string) {
	p.turn.Lock()
	defer p.turn.Unlock()
	p.drop(wc, why)
}

// drop closes wc and forgets it when it is the current one.
func (p *clusterPool) drop(wc *warmCluster, why string) {
	p.mu.Lock()
	if p.cur != wc {
		p.mu.Unlock()
		return
	}
	p.cur = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.log.Info("closing cluster", "model", wc.model, "why", why)
	wc.c.Close()
	p.onOpen(false)
}

// close closes the warm cluster, waiting for the generations that run.
func (p *clusterPool) close() {
	p.turn.Lock()
	defer p.turn.Unlock()
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	if cur != nil {
		p.drop(cur, "serve is stopping")
	}
}

// routeOfStages names the route a formed cluster takes, for metrics: "pd"
// when the planner chose (or the flags forced) a prefill/decode run.
func routeOfStages(stages []requester.Stage) string {
	for _, s := range stages {
		if s.Role == pb.StageRole_STAGE_ROLE_PREFILL {
			return "pd"
		}
	}
	return "pipeline"
}

// routeOf names the route a plan request takes, for metrics.
func routeOf(r requester.Request) string {
	if r.PrefillPeer != "" || r.DecodePeer != "" {
		return "pd"
	}
	return "pipeline"
}
