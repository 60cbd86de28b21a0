package requester

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Failover (docs/architecture.md, request path step 7, "Survive"): a worker
// that vanishes mid-generation is replaced and the answer goes on.
//
// Decisions:
//   - Loss is detected two ways: the session's libp2p stream ends without a
//     Leave (stream reset, missed heartbeats: Session.Lost), which cancels
//     the running stream at once; or the backend's Generate fails
//     (UNAVAILABLE from a dead Ray actor, or the stream broke) and within
//     lossGrace a session reports its worker lost. A backend failure with no
//     lost worker is not failed over: it is returned as it is.
//   - Re-plan keeps every surviving stage and moves only the lost layer
//     ranges (planner.Replace), to the peers the cluster was planned from
//     when that was recent (knownPeersFor), else to peers found by a fresh,
//     short discovery; never to a peer lost (or refusing) earlier in this
//     cluster's life nor one already in the plan. The new worker joins the same Ray head and
//     session with the same token, so the survivors' Ray nodes stay; the
//     backend builds a new pipeline for the new stage set (it keys engines
//     by the plan's stages and kills the old plan's actors).
//   - Replay: the next attempt sends resume_token_ids = the tokens streamed
//     so far (after any the caller passed); the backend appends them to the
//     prompt, does not stream them again, counts them against max_tokens and
//     in usage. Each attempt has its own request id (<id>-f<n>): the lost
//     attempt may still be unwinding on the backend under the old one.
//   - One warning line per failover (OnFailover) says who was lost, after
//     how many tokens, and who took over. At most maxFailovers per request;
//     past that, or when no peer can take a lost stage, Generate fails with
//     ErrUnavailable naming the lost worker.
//   - Concurrent generations (the backend batches them) fail over one at a
//     time (Cluster.fo): the first to see a lost member replaces it for the
//     whole cluster; the others, which ran on the same members (the same
//     epoch), find them already replaced and replay on the new plan, each
//     with its own tokens so far (and, when the replacement gave up, return
//     its error without searching again). One warning line per replacement,
//     from the generation that made it. Each generation still counts its
//     own interruptions against maxFailovers.
//   - Greedy answers are token for token the uninterrupted ones. A sampled
//     answer goes on as a valid sample, but not the one an uninterrupted run
//     with the same seed gives (the backend's sampler starts afresh).
const (
	// maxFailovers bounds the failovers of one request.
	maxFailovers = 2
	// failoverDiscoverTimeout bounds the re-discovery (the swarm was just
	// discovered; this only needs who is still there).
	failoverDiscoverTimeout = 5 * time.Second
	// lossGrace is how long a failed generation waits for a session to report
	// its worker lost: the heartbeat window, by then a silent worker counts as
	// lost.
	lossGrace = time.Duration(p2p.DefaultHeartbeatMisses) * p2p.DefaultHeartbeatInterval
	// knownPeersFor is how long after forming a cluster a failover first
	// re-plans over the workers the cluster was planned from (minus the
	// lost), with no discovery: a discovery right after a link cut waits for
	// the cut peer's record fetch until its timeout (failoverDiscoverTimeout).
	// A replacement that refuses, or does not join within knownJoinTimeout
	// (it may be gone too: a discovery would have seen that), or no plan
	// from them, falls back to a fresh discovery.
	knownPeersFor = 2 * time.Minute
	// knownJoinTimeout: a worker's join (its ray start) took about 5 s on a
	// loaded 2-core machine; six times that is a worker that is not there.
	knownJoinTimeout = 30 * time.Second
	// maxReplaceTries bounds the re-plans when a chosen replacement refuses.
	maxReplaceTries = 3
	// abortGrace is how long an aborted generation may take to end before
	// the stream is cancelled.
	abortGrace = 5 * time.Second
)

// workerLost is the cancel cause of a generation whose worker was lost.
type workerLost struct {
	peer string
	s    Session
}

func (e *workerLost) Error() string {
	return fmt.Sprintf("worker %s left the session mid-generation: %v", e.peer, e.s.Err())
}

// callbackError carries onResp's own error through the backend's Generate.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// Generate runs req on the cluster, with failover; it fills in req.Model
// and req.Plan. onResp gets every streamed response, in order, for the
// whole answer (tokens replayed after a failover are not sent twice, and the
// last response's usage counts the whole answer); its error ends the call
// and is returned. When ctx ends, the generation is aborted (Abort, then the
// stream is cancelled after abortGrace) and Generate returns ErrCancelled.
// Calls run at once: the head's engine batches them.
func (c *Cluster) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	if err := c.begin(); err != nil {
		return err
	}
	defer c.end()
	var (
		resume   = slices.Clone(req.GetResumeTokenIds())
		produced []uint32
		finished bool
	)
	collect := func(resp *pb.GenerateResponse) error {
		produced = append(produced, resp.GetTokenIds()...)
		if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
			finished = true
			c.r.measured.record(c.stagePeers(), resp.GetTimings().GetDecodeTokensPerS())
			c.dropWorkers(resp.GetDroppedWorkers())
		}
		if err := onResp(resp); err != nil {
			return &callbackError{err}
		}
		return nil
	}
	for failovers := 0; ; failovers++ {
		r := req
		if failovers > 0 {
			r = proto.Clone(req).(*pb.GenerateRequest)
			r.RequestId = fmt.Sprintf("%s-f%d", req.GetRequestId(), failovers)
			r.ResumeTokenIds = append(slices.Clone(resume), produced...)
		}
		var (
			members []Member
			epoch   int
		)
		r.Model = c.Plan().Model
		r.Plan, members, epoch = c.backendPlan()
		err := c.attempt(ctx, r, members, collect)
		if err == nil || finished { // a break after the last response loses nothing
			return nil
		}
		if ctx.Err() != nil {
			return cancelled(ctx, "generation aborted")
		}
		if cb, ok := errors.AsType[*callbackError](err); ok {
			return cb.err
		}
		lost := c.lostStages(ctx, members, err)
		if len(lost) == 0 {
			return err
		}
		tokens := len(resume) + len(produced)
		if err := c.replace(ctx, epoch, lost, tokens, failovers); err != nil {
			return err
		}
	}
}

// begin marks a generation running; a closed cluster refuses it.
func (c *Cluster) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	c.generating++
	return nil
}

// end marks the generation over; once none runs, a watched worker left lost
// closes Done.
func (c *Cluster) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generating--
	if c.generating == 0 {
		c.checkLostLocked()
	}
}

// replace fails the lost stages of the members of epoch over after tokens,
// or says why it cannot. When another generation already replaced them, it
// only says to replay on the new plan.
func (c *Cluster) replace(ctx context.Context, epoch int, lost []int, tokens, failovers int) error {
	c.fo.Lock()
	defer c.fo.Unlock()
	c.mu.Lock()
	current := c.epoch
	c.mu.Unlock()
	what := describe(c.Plan(), lost)
	if c.req.disaggregated() { // only the decode worker is watched (pd.go)
		what = c.pdDescribe()
	}
	why := fmt.Sprintf("%s was lost after %s", what, plural(tokens, "token"))
	switch {
	case failovers == maxFailovers:
		return fmt.Errorf("%w: %s; gave up after %d failovers", ErrUnavailable, why, maxFailovers)
	case current != epoch:
		c.r.log.Info("failover: the lost worker was already replaced; replaying", "tokens", tokens)
		return nil
	case c.failed.err != nil && c.failed.epoch == epoch:
		return c.failed.err
	}
	moved, err := c.failover(ctx, lost, why)
	if err != nil {
		if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			c.failed = failedOver{epoch: epoch, err: err}
		}
		return err
	}
	c.onFailover(fmt.Sprintf("%s; replanned onto %s, replaying", why, moved))
	c.r.log.Info("failover", "lost", what, "tokens", tokens, "to", moved)
	return nil
}

// attempt runs one generation on the current plan; a lost worker cancels it
// with a *workerLost cause, returned in place of the stream's error.
func (c *Cluster) attempt(ctx context.Context, r *pb.GenerateRequest, members []Member, onResp func(*pb.GenerateResponse) error) error {
	genCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stopAbort := c.abortWhenDone(ctx, r.GetRequestId(), cancel)
	defer stopAbort()
	stopWatch := c.watchLost(members, cancel)
	defer stopWatch()
	err := c.head.Generate(genCtx, r, onResp)
	if wl, ok := errors.AsType[*workerLost](context.Cause(genCtx)); err != nil && ok {
		return wl
	}
	return err
}

// abortWhenDone sends Abort for the request when ctx ends, and cancels the
// stream if it has not ended abortGrace later. Call the returned stop once
// the generation has ended.
func (c *Cluster) abortWhenDone(ctx context.Context, requestID string, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		actx, cancelAbort := context.WithTimeout(context.Background(), abortGrace)
		defer cancelAbort()
		if _, err := c.head.Abort(actx, requestID); err != nil {
			c.r.log.Warn("abort failed; cancelling the stream", "err", err)
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

// watchLost cancels the generation, with a *workerLost cause, when a
// watched member is lost; stop ends the watch.
func (c *Cluster) watchLost(members []Member, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	plan := c.Plan()
	for _, i := range c.watched(len(members)) {
		s := members[i].Session
		go func() {
			select {
			case <-done:
			case <-s.Lost():
				cancel(&workerLost{peer: plan.Stages[i].PeerID, s: s})
			}
		}()
	}
	return func() { close(done) }
}

// lostStages returns the indices of the watched stages whose worker is lost.
// A generation that failed on its own (the backend saw a Ray actor die
// before the session noticed) waits up to lossGrace for a session to report
// it.
func (c *Cluster) lostStages(ctx context.Context, members []Member, err error) []int {
	watched := c.watched(len(members))
	lost := func() []int {
		return slices.DeleteFunc(slices.Clone(watched), func(i int) bool { return !isLost(members[i].Session) })
	}
	if l := lost(); len(l) > 0 || !maybeLoss(err) {
		return l
	}
	c.r.log.Info("generation failed; waiting to see whether a worker was lost", "err", err)
	timer := time.NewTimer(c.lossGrace)
	defer timer.Stop()
	lostOne := make(chan struct{}, len(watched))
	done := make(chan struct{})
	defer close(done)
	for _, i := range watched {
		go func() {
			select {
			case <-members[i].Session.Lost():
				lostOne <- struct{}{}
			case <-done:
			}
		}()
	}
	select {
	case <-lostOne:
	case <-timer.C:
	case <-ctx.Done():
	}
	return lost()
}

// isLost reports whether s's worker is gone.
func isLost(s Session) bool {
	select {
	case <-s.Lost():
		return true
	default:
		return false
	}
}

// maybeLoss reports whether a backend error can come from a lost worker: a
// Ray failure (UNAVAILABLE), or the stream breaking.
func maybeLoss(err error) bool {
	if _, ok := errors.AsType[*workerLost](err); ok {
		return true
	}
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.Aborted:
		return true
	}
	return false
}

// failover replaces the lost stages: re-discover, planner.Replace, join the
// new workers to the same session. It returns who took which layers; why
// says who was lost and when, for errors. c.fo is held.
func (c *Cluster) failover(ctx context.Context, lost []int, why string) (string, error) {
	old := c.Plan()
	var lostIDs []string
	for _, i := range lost {
		lostIDs = append(lostIDs, old.Stages[i].PeerID)
		c.gone[old.Stages[i].PeerID] = true
	}
	for try := 0; ; try++ {
		started := time.Now()
		joinCtx, cancelJoin := context.WithTimeout(ctx, c.knownJoinTimeout)
		plan, rtts, err := c.replanKnown(old, lostIDs, try)
		if err != nil {
			cancelJoin()
			joinCtx, cancelJoin = context.WithCancel(ctx) // discovered: the usual join timeout
			plan, rtts, err = c.replan(ctx, old, lostIDs, why)
		}
		if err != nil {
			cancelJoin()
			return "", err
		}
		replanned := time.Now()
		var fresh []int // stages on a new peer
		for i, s := range plan.Stages {
			if s.PeerID != old.Stages[i].PeerID {
				fresh = append(fresh, i)
			}
		}
		members, errs := c.join(joinCtx, plan, fresh)
		cancelJoin()
		// The failover's phases, for failover_after_link_cut_s's breakdown.
		c.r.log.Info("failover: replaced", "try", try, "replan_ms", replanned.Sub(started).Milliseconds(),
			"join_ms", time.Since(replanned).Milliseconds())
		if ctx.Err() != nil {
			leave(members)
			return "", cancelled(ctx, "while a replacement worker joined")
		}
		refused := map[string]error{}
		for k, err := range errs {
			if err != nil {
				refused[plan.Stages[fresh[k]].PeerID] = err
			}
		}
		if len(refused) == 0 {
			c.adopt(plan, rtts, fresh, members)
			return describeMoved(plan, fresh), nil
		}
		leave(members) // a partial replacement is no use: try again
		if try+1 == maxReplaceTries {
			return "", fmt.Errorf("%w: %s, and its replacements refused: %w",
				ErrUnavailable, why, errors.Join(slices.Collect(maps.Values(refused))...))
		}
		for id, err := range refused {
			c.r.log.Warn("replacement refused", "peer", id, "err", err)
			c.gone[id] = true
		}
	}
}

// replanKnown moves the lost peers' layers onto workers the cluster was
// planned from, on a first try soon after forming (knownPeersFor); an error
// when that does not apply or gives no plan.
func (c *Cluster) replanKnown(old planner.Plan, lostIDs []string, try int) (planner.Plan, map[string]time.Duration, error) {
	if try > 0 || len(c.known) == 0 || time.Since(c.knownAt) > knownPeersFor {
		return planner.Plan{}, nil, errors.New("no recent peers")
	}
	peers := slices.DeleteFunc(c.r.dropped.filter(slices.Clone(c.known)), func(p planner.Peer) bool {
		return c.gone[p.ID] && !slices.Contains(lostIDs, p.ID)
	})
	plan, err := planner.Replace(old, lostIDs, peers, c.req.plannerRequest())
	if err != nil {
		return planner.Plan{}, nil, err
	}
	return plan, rtts(peers), nil
}

// replan discovers the workers still there and moves the lost peers'
// layers onto others (planner.Replace), never onto a peer gone earlier.
func (c *Cluster) replan(ctx context.Context, old planner.Plan, lostIDs []string, why string) (planner.Plan, map[string]time.Duration, error) {
	peers, err := c.r.discover(ctx, min(c.req.DiscoverTimeout, failoverDiscoverTimeout))
	peers = c.r.measured.apply(c.req.markTrusted(peers))
	if err != nil {
		return planner.Plan{}, nil, err
	}
	peers = slices.DeleteFunc(peers, func(p planner.Peer) bool { return c.gone[p.ID] && !slices.Contains(lostIDs, p.ID) })
	plan, err := planner.Replace(old, lostIDs, peers, c.req.plannerRequest())
	if errors.Is(err, planner.ErrNoProvider) {
		spare := 0
		for _, p := range peers {
			if !slices.ContainsFunc(old.Stages, func(s planner.Stage) bool { return s.PeerID == p.ID }) {
				spare++
			}
		}
		return planner.Plan{}, nil, fmt.Errorf("%w: %s, and no other worker can hold its layers (%s found)",
			ErrUnavailable, why, plural(spare, "other worker"))
	}
	if err != nil { // busy, over a limit: the planner says which
		return planner.Plan{}, nil, fmt.Errorf("%w: %s, and no other worker can take its layers: %w", ErrUnavailable, why, err)
	}
	return plan, rtts(peers), nil
}

// adopt makes plan current, with members for its fresh stages.
func (c *Cluster) adopt(plan planner.Plan, rtts map[string]time.Duration, fresh []int, members []Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.plan = plan
	c.epoch++
	for k, i := range fresh {
		c.members[i] = members[k]
	}
	maps.Copy(c.rtts, rtts)
	for _, m := range members {
		c.watchIdle(m)
	}
}

// describe names the workers of plan's stages idx, e.g. "worker 12D3…
// (layers [15,30))".
func describe(plan planner.Plan, idx []int) string {
	var out []string
	for _, i := range idx {
		if i < len(plan.Stages) {
			s := plan.Stages[i]
			out = append(out, fmt.Sprintf("worker %s (layers [%d,%d))", s.PeerID, s.Start, s.End))
		}
	}
	return strings.Join(out, " and ")
}

// describeMoved names who took plan's stages idx, e.g. "12D3… (layers
// [15,30))".
func describeMoved(plan planner.Plan, idx []int) string {
	var to []string
	for _, i := range idx {
		s := plan.Stages[i]
		to = append(to, fmt.Sprintf("%s (layers [%d,%d))", s.PeerID, s.Start, s.End))
	}
	return strings.Join(to, ", ")
}

// plural is "1 token", "7 tokens".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
