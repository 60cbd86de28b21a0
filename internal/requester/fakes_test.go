package requester

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The fakes stand in for the network and the backend, so failover,
// re-planning and cluster reuse run without processes; the real ones are
// exercised end to end by the CLI's tests.

const (
	model = "m"
	cid   = "bafk-m"
)

// worker is a peer serving the whole model.
func worker(id string) planner.Peer {
	return planner.Peer{ID: id, Models: []planner.Model{{ID: model, WeightsCID: cid, NumLayers: 30, WeightsBytes: 100 << 20}},
		MemoryFreeBytes: 8 << 30, DecodeTokensPerS: 50, MaxSessions: 1, RTT: time.Millisecond}
}

// fakeSession is a member's session: lose ends it as a lost worker.
type fakeSession struct {
	peer     string
	lost     chan struct{}
	loseOnce sync.Once
	mu       sync.Mutex
	left     bool
}

func (s *fakeSession) Lost() <-chan struct{} { return s.lost }

func (s *fakeSession) Err() error {
	if isLost(s) {
		return fmt.Errorf("%w: worker %s: stream reset", p2p.ErrSessionLost, s.peer)
	}
	return nil
}

func (s *fakeSession) Leave(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.left = true
	return s.Err()
}

func (s *fakeSession) lose() { s.loseOnce.Do(func() { close(s.lost) }) }

func (s *fakeSession) hasLeft() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.left
}

// fakeSwarm discovers peers (settable) and joins them, refusing those in
// refuse.
type fakeSwarm struct {
	mu        sync.Mutex
	peers     []planner.Peer
	refuse    map[string]bool
	silent    map[string]bool           // joins never answered (a cut link)
	sessions  map[string][]*fakeSession // by peer, in join order
	joins     []p2p.JoinRequest
	discovers int
}

func newFakeSwarm(ids ...string) *fakeSwarm {
	s := &fakeSwarm{refuse: map[string]bool{}, silent: map[string]bool{}, sessions: map[string][]*fakeSession{}}
	s.setPeers(ids...)
	return s
}

func (s *fakeSwarm) setPeers(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers = nil
	for _, id := range ids {
		s.peers = append(s.peers, worker(id))
	}
}

func (s *fakeSwarm) Discover(ctx context.Context, _ time.Duration) []planner.Peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.discovers++
	if ctx.Err() != nil {
		return nil
	}
	return slices.Clone(s.peers)
}

func (s *fakeSwarm) Join(ctx context.Context, id string, req p2p.JoinRequest) (Member, error) {
	s.mu.Lock()
	if s.silent[id] { // unreachable: no answer until the caller gives up
		s.mu.Unlock()
		<-ctx.Done()
		return Member{}, ctx.Err()
	}
	defer s.mu.Unlock()
	s.joins = append(s.joins, req)
	if s.refuse[id] {
		return Member{}, fmt.Errorf("%w: busy", p2p.ErrJoinRefused)
	}
	sess := &fakeSession{peer: id, lost: make(chan struct{})}
	s.sessions[id] = append(s.sessions[id], sess)
	return Member{RayAddress: "ray-" + id, ResourceName: "peer:" + id, Session: sess}, nil
}

func (s *fakeSwarm) ReachableIP() string { return "10.0.0.7" }

// session is peer id's latest session.
func (s *fakeSwarm) session(id string) *fakeSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[id]
	if len(ss) == 0 {
		return nil
	}
	return ss[len(ss)-1]
}

// all are every session ever joined.
func (s *fakeSwarm) all() []*fakeSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*fakeSession
	for _, ss := range s.sessions {
		out = append(out, ss...)
	}
	return out
}

// attempt is what the fake backend does with one generation request.
type attempt func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error

// fakeHead is the requester's backend: it runs the scripted attempts in
// order and records what it was asked.
type fakeHead struct {
	sw       *fakeSwarm
	startErr error

	mu         sync.Mutex
	attempts   []attempt
	requests   []*pb.GenerateRequest
	starts     []*pb.StartClusterHeadRequest
	left       []string
	aborted    []string
	cancels    map[string]context.CancelFunc // running generations, by request id
	running    int
	maxRunning int
}

func (h *fakeHead) StartClusterHead(_ context.Context, req *pb.StartClusterHeadRequest) (*pb.ClusterNode, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.starts = append(h.starts, req)
	if h.startErr != nil {
		return nil, h.startErr
	}
	return &pb.ClusterNode{SessionId: req.GetSessionId(), HeadAddress: req.GetBindAddress() + ":6379"}, nil
}

func (h *fakeHead) LeaveCluster(_ context.Context, id string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.left = append(h.left, id)
	return true, nil
}

func (h *fakeHead) Abort(_ context.Context, id string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted = append(h.aborted, id)
	cancel, ok := h.cancels[id]
	if ok {
		cancel()
	}
	return ok, nil
}

func (h *fakeHead) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	h.mu.Lock()
	h.requests = append(h.requests, proto.Clone(req).(*pb.GenerateRequest))
	h.running++
	h.maxRunning = max(h.maxRunning, h.running)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if h.cancels == nil {
		h.cancels = map[string]context.CancelFunc{}
	}
	h.cancels[req.GetRequestId()] = cancel
	var a attempt = finish(3)
	if len(h.attempts) > 0 {
		a, h.attempts = h.attempts[0], h.attempts[1:]
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.running--
		delete(h.cancels, req.GetRequestId())
		h.mu.Unlock()
	}()
	return a(ctx, req, onResp)
}

func (h *fakeHead) script(as ...attempt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts = append(h.attempts, as...)
}

func (h *fakeHead) sent() []*pb.GenerateRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.requests)
}

// stream sends n tokens numbered on from those already produced (the
// request's resume tokens), the last one finishing when last.
func stream(req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error, n int, last bool) error {
	first := len(req.GetResumeTokenIds())
	for i := range n {
		resp := &pb.GenerateResponse{RequestId: req.GetRequestId(), TokenIds: []uint32{uint32(first + i)}, Text: "t"}
		if last && i == n-1 {
			resp.FinishReason = pb.FinishReason_FINISH_REASON_LENGTH
		}
		if err := onResp(resp); err != nil {
			return err
		}
	}
	return nil
}

// finish streams n tokens and ends the answer.
func finish(n int) attempt {
	return func(_ context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		return stream(req, onResp, n, true)
	}
}

// stageLost streams n tokens, loses the worker of plan stage i, and waits
// for the requester to cut the stream.
func (s *fakeSwarm) stageLost(n, i int) attempt {
	return func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		if err := stream(req, onResp, n, false); err != nil {
			return err
		}
		s.session(strings.TrimPrefix(req.GetPlan().GetStages()[i].GetPeerResource(), "peer:")).lose()
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
}

// failing streams n tokens and fails with err; when lose is set, the
// worker of plan stage i is lost a little later (the backend noticed
// first).
func (s *fakeSwarm) failing(n int, err error, lose bool, i int) attempt {
	return func(_ context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		if err := stream(req, onResp, n, false); err != nil {
			return err
		}
		if lose {
			sess := s.session(strings.TrimPrefix(req.GetPlan().GetStages()[i].GetPeerResource(), "peer:"))
			time.AfterFunc(20*time.Millisecond, sess.lose)
		}
		return err
	}
}

// blocking streams n tokens and waits for ctx (an abort).
func blocking(n int) attempt {
	return func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		if err := stream(req, onResp, n, false); err != nil {
			return err
		}
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
}

// together returns a barrier for n goroutines: each call waits until n
// have called (or 10 s passed, so a test that runs too few fails on its
// counts rather than hanging).
func together(n int) func() {
	var wg sync.WaitGroup
	wg.Add(n)
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	return func() {
		wg.Done()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
	}
}

// form plans req over sw and forms the cluster on h, with a short loss
// grace; t.Cleanup closes it.
func form(t *testing.T, sw *fakeSwarm, h *fakeHead, req Request, opts ...ClusterOption) *Cluster {
	t.Helper()
	r := New(sw)
	p, err := r.Plan(t.Context(), req)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	c, err := r.Form(t.Context(), h, p, opts...)
	if err != nil {
		t.Fatalf("form: %v", err)
	}
	c.lossGrace = 200 * time.Millisecond
	c.knownJoinTimeout = 200 * time.Millisecond
	t.Cleanup(c.Close)
	return c
}

// collect runs Generate and returns the token ids streamed.
func collect(ctx context.Context, c *Cluster, id string) ([]uint32, error) {
	var got []uint32
	err := c.Generate(ctx, &pb.GenerateRequest{RequestId: id, Input: &pb.GenerateRequest_Prompt{Prompt: "hi"}},
		func(r *pb.GenerateResponse) error {
			got = append(got, r.GetTokenIds()...)
			return nil
		})
	return got, err
}

// waitClosed waits for ch, failing after a while.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never happened", what)
	}
}

var errCallback = errors.New("client went away")
