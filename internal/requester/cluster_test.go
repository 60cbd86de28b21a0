package requester

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestClusterReuse: a formed cluster serves request after request on the
// same head and workers, runs concurrent calls at once, tells its
// holder when a worker is lost while idle, and leaves nothing behind on
// Close.
func TestClusterReuse(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster)
	}{
		{"sequential requests share the cluster", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			for _, id := range []string{"r1", "r2", "r3"} {
				if tokens, err := collect(t.Context(), c, id); err != nil || len(tokens) != 3 {
					t.Fatalf("%s: %v, %v", id, tokens, err)
				}
			}
			sent := h.sent()
			if len(h.starts) != 1 || len(sw.joins) != 2 || len(sent) != 3 {
				t.Fatalf("%d heads, %d joins, %d generations; want 1, 2, 3", len(h.starts), len(sw.joins), len(sent))
			}
			for _, r := range sent {
				if r.GetPlan().GetSessionId() != sent[0].GetPlan().GetSessionId() || r.GetModel() != model {
					t.Errorf("request %s: plan %v, model %q; want the cluster's", r.GetRequestId(), r.GetPlan(), r.GetModel())
				}
			}
		}},
		{"concurrent requests run at once", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			const n = 8
			all := together(n)
			for range n {
				h.script(func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
					all()
					return finish(3)(ctx, req, onResp)
				})
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					tokens, err := collect(t.Context(), c, fmt.Sprintf("r%d", i))
					if err == nil && len(tokens) != 3 {
						err = fmt.Errorf("r%d: tokens %v; want 3", i, tokens)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			if h.maxRunning != n || len(h.sent()) != n || len(h.starts) != 1 || len(sw.joins) != 2 {
				t.Errorf("%d generations at once, %d in all, %d heads, %d joins; want %d, %d, 1, 2",
					h.maxRunning, len(h.sent()), len(h.starts), len(sw.joins), n, n)
			}
		}},
		{"a worker lost while idle closes Done; Generate still fails over", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			sw.setPeers("A", "B", "C")
			sw.session("B").lose()
			waitClosed(t, c.Done(), "Done after an idle loss")
			if err := c.Err(); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "worker B (layers [15,30)) was lost") {
				t.Errorf("Err = %v; want unavailable naming worker B", err)
			}
			h.script(blocking(0), finish(2))
			if tokens, err := collect(t.Context(), c, "r"); err != nil || len(tokens) != 2 {
				t.Fatalf("generate after the loss: %v, %v", tokens, err)
			}
			if got := stageIDs(c); got[1] != "C" {
				t.Errorf("stages %v; want B replaced by C", got)
			}
		}},
		{"a worker replaced mid-generation leaves Done open", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			sw.setPeers("A", "B", "C")
			h.script(sw.stageLost(1, 0), finish(1))
			if _, err := collect(t.Context(), c, "r"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Done():
				t.Fatalf("Done after a successful failover: %v", c.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}},
		{"a generation that could not replace its worker closes Done", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			h.script(sw.stageLost(1, 0))
			if _, err := collect(t.Context(), c, "r"); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Generate: %v; want unavailable", err)
			}
			waitClosed(t, c.Done(), "Done after a failed failover")
		}},
		{"Close leaves every worker and the head", func(t *testing.T, sw *fakeSwarm, h *fakeHead, c *Cluster) {
			c.Close()
			c.Close()
			for _, s := range sw.all() {
				if !s.hasLeft() {
					t.Errorf("worker %s did not leave", s.peer)
				}
			}
			if len(h.left) != 1 || h.left[0] != h.starts[0].GetSessionId() {
				t.Errorf("head left %v; want its session once", h.left)
			}
			waitClosed(t, c.Done(), "Done after Close")
			if _, err := collect(t.Context(), c, "late"); !errors.Is(err, ErrUnavailable) || len(h.sent()) != 0 {
				t.Errorf("Generate after Close: %v; want unavailable, nothing sent", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B")
			h := &fakeHead{sw: sw}
			tt.run(t, sw, h, form(t, sw, h, Request{Model: model, Stages: 2}))
		})
	}
}

// TestClusterView: what a formed cluster says about itself, for a pipeline
// and a prefill/decode run, and the backend plan its requests carry.
func TestClusterView(t *testing.T) {
	tests := []struct {
		name  string
		req   Request
		roles []pb.StageRole
		spans [][2]int
	}{
		{"pipeline", Request{Model: model, Stages: 2}, []pb.StageRole{0, 0}, [][2]int{{0, 15}, {15, 30}}},
		{"prefill/decode", Request{Model: model, PrefillPeer: "B", DecodePeer: "A"},
			[]pb.StageRole{pb.StageRole_STAGE_ROLE_PREFILL, pb.StageRole_STAGE_ROLE_DECODE}, [][2]int{{0, 30}, {0, 30}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B")
			h := &fakeHead{sw: sw}
			c := form(t, sw, h, tt.req)
			if st := h.starts[0]; st.GetBindAddress() != "10.0.0.7" || len(st.GetToken()) != 2*p2p.RayTokenLen {
				t.Errorf("head started with %v; want the swarm's reachable IP and a fresh token", st)
			}
			for _, j := range sw.joins {
				if j.HeadAddress != "10.0.0.7:6379" || j.SessionID.String() != h.starts[0].GetSessionId() || j.WeightsCID != cid {
					t.Errorf("join %+v; want the head's address, session and weights", j)
				}
			}
			if c.WeightsCID() != cid || c.Plan().Model != model {
				t.Errorf("weights %q, model %q", c.WeightsCID(), c.Plan().Model)
			}
			if _, err := collect(t.Context(), c, "r"); err != nil {
				t.Fatal(err)
			}
			plan := h.sent()[0].GetPlan()
			for i, s := range c.Stages() {
				if s.Role != tt.roles[i] || s.Start != tt.spans[i][0] || s.End != tt.spans[i][1] ||
					s.RayAddress != "ray-"+s.PeerID || s.RTT != time.Millisecond {
					t.Errorf("stage %d: %+v", i, s)
				}
				ps := plan.GetStages()[i]
				if ps.GetRole() != tt.roles[i] || ps.GetPeerResource() != "peer:"+s.PeerID || ps.GetWeightsCid() != cid {
					t.Errorf("backend plan stage %d: %v", i, ps)
				}
			}
		})
	}
}

// TestPlan: each refusal carries the sentinel a caller sorts it by, with
// the words users have always seen.
func TestPlan(t *testing.T) {
	busy := worker("A")
	busy.ActiveSessions = 1
	tests := []struct {
		name  string
		peers []planner.Peer
		req   Request
		want  []error // errors.Is each; nil: planned
		text  string  // the error's text starts with it
	}{
		{"one worker holds it", []planner.Peer{worker("A"), worker("B")}, Request{Model: model}, nil, ""},
		{"too many stages", []planner.Peer{worker("A"), worker("B")}, Request{Model: model, Stages: 3},
			[]error{ErrInvalidRequest, planner.ErrTooManyStages}, "too many stages: "},
		{"unknown model", []planner.Peer{worker("A"), worker("B")}, Request{Model: "other"},
			[]error{ErrNotFound, planner.ErrNoProvider}, "not found: model not served"},
		{"every provider busy", []planner.Peer{busy}, Request{Model: model},
			[]error{ErrUnavailable, planner.ErrBusy}, "unavailable: all providers busy"},
		{"P/D peer not found", []planner.Peer{worker("A"), worker("B")}, Request{Model: model, PrefillPeer: "A", DecodePeer: "Z"},
			[]error{ErrNotFound, planner.ErrUnknownPeer}, "not found: unknown peer: decode peer Z is not among"},
		{"P/D with different weights", []planner.Peer{worker("A"), otherWeights("B")}, Request{Model: model, PrefillPeer: "A", DecodePeer: "B"},
			[]error{ErrInvalidRequest, planner.ErrDifferentWeights}, "invalid argument: the prefill and decode peers hold different weights"},
		{"nobody there", nil, Request{Model: model}, []error{ErrNotFound}, "not found: model not served"},
		{"trusted peers only, and one is there", []planner.Peer{worker("B"), worker("A")}, Request{Model: model, TrustedPeers: "A"}, nil, ""},
		{"trusted peers only, none there", []planner.Peer{worker("A"), worker("B")}, Request{Model: model, TrustedPeers: "C,D"},
			[]error{ErrNotFound, planner.ErrNoTrustedPeer}, "not found: no trusted provider"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := &fakeSwarm{peers: tt.peers}
			p, err := New(sw).Plan(t.Context(), tt.req)
			if tt.want == nil {
				if err != nil || len(p.Plan.Stages) == 0 || p.RTTs["A"] != time.Millisecond || p.Request.DiscoverTimeout != DefaultDiscoverTimeout {
					t.Fatalf("Plan = %+v, %v", p, err)
				}
				if tt.req.TrustedPeers != "" && p.Plan.Stages[0].PeerID != "A" {
					t.Fatalf("planned on %s, not the trusted peer", p.Plan.Stages[0].PeerID)
				}
				return
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Plan: %v; want it to match %v", err, w)
				}
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.text) {
				t.Errorf("Plan: %v; want it to start %q", err, tt.text)
			}
		})
	}
}

func otherWeights(id string) planner.Peer {
	p := worker(id)
	p.Models[0].WeightsCID = "bafk-other"
	return p
}

// TestFormFailure: a cluster that cannot form leaves nothing behind, and
// says why.
func TestFormFailure(t *testing.T) {
	tests := []struct {
		name     string
		startErr error
		refuse   string
		text     string
		joined   int
	}{
		{"head does not start", errors.New("ray: port in use"), "", "start the Ray head: ray: port in use", 0},
		{"a worker refuses", nil, "B", "unavailable: worker B refused layers [15,30)", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B")
			if tt.refuse != "" {
				sw.refuse[tt.refuse] = true
			}
			h := &fakeHead{sw: sw, startErr: tt.startErr}
			r := New(sw)
			p, err := r.Plan(t.Context(), Request{Model: model, Stages: 2})
			if err != nil {
				t.Fatal(err)
			}
			c, err := r.Form(t.Context(), h, p)
			if c != nil || err == nil || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Form = %v, %v; want %q", c, err, tt.text)
			}
			all := sw.all()
			if len(all) != tt.joined {
				t.Errorf("%d workers joined; want %d", len(all), tt.joined)
			}
			for _, s := range all {
				if !s.hasLeft() {
					t.Errorf("worker %s was left in the cluster", s.peer)
				}
			}
			if len(h.left) != 1 {
				t.Errorf("head left %d times; want once", len(h.left))
			}
		})
	}
}

// TestCancel: a caller's context that ends stops discovery and aborts a
// running generation; both are ErrCancelled.
func TestCancel(t *testing.T) {
	sw := newFakeSwarm("A", "B")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := New(sw).Plan(ctx, Request{Model: model}); !errors.Is(err, ErrCancelled) {
		t.Errorf("Plan after cancel: %v; want cancelled", err)
	}

	h := &fakeHead{sw: sw}
	c := form(t, sw, h, Request{Model: model, Stages: 2})
	h.script(blocking(2))
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	tokens, err := collect(ctx, c, "r")
	if !errors.Is(err, ErrCancelled) || len(tokens) != 2 {
		t.Errorf("Generate cut short: %v after %v; want cancelled after 2 tokens", err, tokens)
	}
	if len(h.aborted) != 1 || h.aborted[0] != "r" {
		t.Errorf("aborted %v; want r", h.aborted)
	}
	h.script(finish(1))
	if _, err := collect(t.Context(), c, "again"); err != nil {
		t.Errorf("the cluster after a cancelled request: %v", err)
	}
	var calls int
	err = c.Generate(t.Context(), &pb.GenerateRequest{RequestId: "cb"}, func(*pb.GenerateResponse) error {
		calls++
		return errCallback
	})
	if err != errCallback || calls != 1 {
		t.Errorf("Generate with a failing callback: %v after %d calls; want the callback's error after 1", err, calls)
	}
}
