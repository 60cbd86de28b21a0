package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Failover (DESIGN.md, request path step 7, "Survive"): a worker that
// vanishes mid-generation is replaced and the answer goes on.
//
// Decisions:
//   - Loss is detected two ways: the session's libp2p stream ends without a
//     Leave (stream reset, missed heartbeats: SessionHandle.Lost), which
//     cancels the running stream at once; or the backend's Generate fails
//     (UNAVAILABLE from a dead Ray actor, or the stream broke) and within
//     lossGrace a session reports its worker lost. A backend failure with no
//     lost worker is not failed over: it is returned as it is.
//   - Re-plan keeps every surviving stage and moves only the lost layer
//     ranges (planner.Replace), to peers found by a fresh, short discovery,
//     never to a peer lost (or refusing) earlier in this run nor one already
//     in the plan. The new worker joins the same Ray head and session with
//     the same token, so the survivors' Ray nodes stay; the backend builds a
//     new pipeline for the new stage set (it keys engines by the plan's
//     stages and kills the old plan's actors).
//   - Replay: the next attempt sends resume_token_ids = the tokens streamed
//     so far (after any the caller passed); the backend appends them to the
//     prompt, does not stream them again, counts them against max_tokens and
//     in usage. Each attempt has its own request id (<id>-f<n>): the lost
//     attempt may still be unwinding on the backend under the old one.
//   - One line on stderr per failover says who was lost, after how many
//     tokens, and who took over. At most maxFailovers per request; past that,
//     or when no peer can take a lost stage, Generate fails with
//     ErrUnavailable (exit 4) naming the lost worker.
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
	// maxReplaceTries bounds the re-plans when a chosen replacement refuses.
	maxReplaceTries = 3
)

// workerLost is the cancel cause of a generation whose worker was lost.
type workerLost struct{ h *p2p.SessionHandle }

func (e *workerLost) Error() string {
	return fmt.Sprintf("worker %s left the session mid-generation: %v", e.h.Peer, e.h.Err())
}

// callbackError carries onResp's own error through the backend's Generate.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// Generate runs req (req.Model/Plan are filled in by Generate) on the
// cluster, with failover; onResp gets every streamed response, in order, for
// the whole answer (tokens replayed after a failover are not sent twice, and
// the last response's usage counts the whole answer). When ctx ends or the
// node is interrupted, the generation is aborted (Abort, then the stream is
// cancelled after abortGrace) and Generate returns ErrInterrupted
// (interrupt) or ctx's error.
func (c *clusterRun) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	c.gen.Lock() // one generation at a time: the backend drives one per cluster
	defer c.gen.Unlock()
	var (
		resume   = slices.Clone(req.GetResumeTokenIds())
		produced []uint32
		finished bool
	)
	collect := func(resp *pb.GenerateResponse) error {
		produced = append(produced, resp.GetTokenIds()...)
		if resp.GetFinishReason() != pb.FinishReason_FINISH_REASON_UNSPECIFIED {
			finished = true
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
		var handles []*p2p.SessionHandle
		r.Model = c.Plan().Model
		r.Plan, handles = c.backendPlan()
		err := c.attempt(ctx, r, handles, collect)
		if err == nil || finished { // a break after the last response loses nothing
			return nil
		}
		if c.app.interrupt.Err() != nil {
			return fmt.Errorf("%w: generation aborted", ErrInterrupted)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if cb, ok := errors.AsType[*callbackError](err); ok {
			return cb.err
		}
		lost := c.lostStages(ctx, c.d.watched(handles), err)
		if len(lost) == 0 {
			return err
		}
		if c.d.disaggregated() { // only the decode worker is watched (pd.go)
			return c.pdLost(len(resume) + len(produced))
		}
		tokens, what := len(resume)+len(produced), c.describe(lost)
		if failovers == maxFailovers {
			return fmt.Errorf("%w: %s was lost after %s; gave up after %d failovers",
				ErrUnavailable, what, plural(tokens, "token"), maxFailovers)
		}
		fctx, cancel := c.app.withInterrupt(ctx) // discovery and joins end on Ctrl-C too
		moved, err := c.failover(fctx, lost, fmt.Sprintf("%s was lost after %s", what, plural(tokens, "token")))
		cancel()
		if err != nil {
			return err
		}
		// The one line the user sees (the log line only shows at --log-level info).
		line := fmt.Sprintf("%s was lost after %s; replanned onto %s, replaying", what, plural(tokens, "token"), moved)
		if c.OnFailover != nil {
			c.OnFailover(line)
		} else {
			fmt.Fprintf(c.app.stderr, "edgellm: warning: %s\n", line)
		}
		c.app.log.Info("failover", "lost", what, "tokens", tokens, "to", moved)
	}
}

// attempt runs one generation on the current plan; a lost worker cancels it
// with a *workerLost cause, returned in place of the stream's error.
func (c *clusterRun) attempt(ctx context.Context, r *pb.GenerateRequest, handles []*p2p.SessionHandle, onResp func(*pb.GenerateResponse) error) error {
	genCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stopAbort := c.abortWhenDone(ctx, r.GetRequestId(), cancel)
	defer stopAbort()
	stopWatch := watchLost(c.d.watched(handles), cancel)
	defer stopWatch()
	err := c.b.Generate(genCtx, r, onResp)
	if wl, ok := errors.AsType[*workerLost](context.Cause(genCtx)); err != nil && ok {
		return wl
	}
	return err
}

// lostStages returns the indices of the plan stages whose worker is lost. A
// generation that failed on its own (the backend saw a Ray actor die before
// the session noticed) waits up to lossGrace for a session to report it.
func (c *clusterRun) lostStages(ctx context.Context, handles []*p2p.SessionHandle, err error) []int {
	lost := func() []int {
		var out []int
		for i, h := range handles {
			select {
			case <-h.Lost():
				out = append(out, i)
			default:
			}
		}
		return out
	}
	if l := lost(); len(l) > 0 || !maybeLoss(err) {
		return l
	}
	c.app.log.Info("generation failed; waiting to see whether a worker was lost", "err", err)
	timer := time.NewTimer(lossGrace)
	defer timer.Stop()
	lostOne := make(chan struct{}, len(handles))
	done := make(chan struct{})
	defer close(done)
	for _, h := range handles {
		go func() {
			select {
			case <-h.Lost():
				lostOne <- struct{}{}
			case <-done:
			}
		}()
	}
	select {
	case <-lostOne:
	case <-timer.C:
	case <-ctx.Done():
	case <-c.app.interrupt.Done():
	}
	return lost()
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
// new workers to the same session. It returns who took which layers.
// why says who was lost and when, for errors.
func (c *clusterRun) failover(ctx context.Context, lost []int, why string) (string, error) {
	old := c.Plan()
	var lostIDs []string
	for _, i := range lost {
		lostIDs = append(lostIDs, old.Stages[i].PeerID)
		c.gone[old.Stages[i].PeerID] = true
	}
	for try := 0; ; try++ {
		peers, rtts, err := c.app.discover(ctx, c.node, min(c.d.discoverFor, failoverDiscoverTimeout))
		if err != nil {
			return "", err
		}
		peers = slices.DeleteFunc(peers, func(p planner.Peer) bool { return c.gone[p.ID] && !slices.Contains(lostIDs, p.ID) })
		plan, err := planner.Replace(old, lostIDs, peers, c.d.planRequest(old.Model))
		if errors.Is(err, planner.ErrNoProvider) {
			spare := 0
			for _, p := range peers {
				if !slices.ContainsFunc(old.Stages, func(s planner.Stage) bool { return s.PeerID == p.ID }) {
					spare++
				}
			}
			return "", fmt.Errorf("%w: %s, and no other worker can hold its layers (%s found)",
				ErrUnavailable, why, plural(spare, "other worker"))
		}
		if err != nil { // busy, over a limit: the planner says which
			return "", fmt.Errorf("%w: %s, and no other worker can take its layers: %w", ErrUnavailable, why, err)
		}
		var fresh []int // stages on a new peer
		for i, s := range plan.Stages {
			if s.PeerID != old.Stages[i].PeerID {
				fresh = append(fresh, i)
			}
		}
		handles, refused, err := c.joinSome(ctx, plan, fresh)
		if err != nil {
			return "", err
		}
		if len(refused) == 0 {
			c.mu.Lock()
			c.plan = plan
			for k, i := range fresh {
				c.handles[i] = handles[k]
			}
			maps.Copy(c.rtts, rtts)
			c.mu.Unlock()
			var to []string
			for _, i := range fresh {
				s := plan.Stages[i]
				to = append(to, fmt.Sprintf("%s (layers [%d,%d))", s.PeerID, s.Start, s.End))
			}
			return strings.Join(to, ", "), nil
		}
		for _, h := range handles { // a partial replacement is no use: try again
			if h != nil {
				h.Leave(context.Background())
			}
		}
		if try+1 == maxReplaceTries {
			return "", fmt.Errorf("%w: %s, and its replacements refused: %w",
				ErrUnavailable, why, errors.Join(slices.Collect(maps.Values(refused))...))
		}
		for id, err := range refused {
			c.app.log.Warn("replacement refused", "peer", id, "err", err)
			c.gone[id] = true
		}
	}
}

// joinSome has the workers of the plan's stages idx join the session, in
// parallel: their handles in idx order (nil where refused), and the refusals
// by peer. ctx ending is the only error.
func (c *clusterRun) joinSome(ctx context.Context, plan planner.Plan, idx []int) ([]*p2p.SessionHandle, map[string]error, error) {
	handles := make([]*p2p.SessionHandle, len(idx))
	errs := make([]error, len(idx))
	var wg sync.WaitGroup
	for k, i := range idx {
		s := plan.Stages[i]
		id, err := peer.Decode(s.PeerID)
		if err != nil {
			errs[k] = err
			continue
		}
		wg.Go(func() {
			handles[k], errs[k] = c.client.JoinSession(ctx, id, p2p.JoinRequest{
				SessionID: c.sid, Model: plan.Model, WeightsCID: plan.WeightsCID,
				Layers:      p2p.LayerRange{Start: uint32(s.Start), End: uint32(s.End)},
				HeadAddress: c.head, RayToken: c.token,
			})
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		for _, h := range handles {
			if h != nil {
				h.Leave(context.Background())
			}
		}
		return nil, nil, c.app.stopped(ctx, "while a replacement worker joined")
	}
	refused := map[string]error{}
	for k, err := range errs {
		if err != nil {
			refused[plan.Stages[idx[k]].PeerID] = err
		}
	}
	return handles, refused, nil
}

// describe names the workers of the current plan's stages idx, e.g.
// "worker 12D3… (layers [15,30))".
func (c *clusterRun) describe(idx []int) string {
	plan := c.Plan()
	var out []string
	for _, i := range idx {
		if i < len(plan.Stages) {
			s := plan.Stages[i]
			out = append(out, fmt.Sprintf("worker %s (layers [%d,%d))", s.PeerID, s.Start, s.End))
		}
	}
	return strings.Join(out, " and ")
}

// plural is "1 token", "7 tokens".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
