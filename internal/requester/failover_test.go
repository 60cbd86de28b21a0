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

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/planner"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestFailover: what Generate does when a worker goes away mid-answer —
// replace it and replay, or fail with a line that says why — for a
// two-stage pipeline over workers A and B, with more workers appearing
// after the cluster formed (spare).
func TestFailover(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "a stage failed: ActorDiedError")
	tests := []struct {
		name    string
		spare   []string
		refuse  []string
		pd      bool
		script  func(sw *fakeSwarm) []attempt
		want    error  // nil: the whole answer
		text    string // in the error, or in the failover lines
		lines   int    // failover lines
		replays int    // attempts after the first
		moved   []string
	}{
		{name: "lost worker replaced, answer replayed", spare: []string{"C"},
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(3, 1), finish(2)} },
			text:   "was lost after 3 tokens; replanned onto C (layers [15,30)), replaying",
			lines:  1, replays: 1, moved: []string{"A", "C"}},
		{name: "backend fails first, loss reported within the grace", spare: []string{"C"},
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.failing(2, unavailable, true, 0), finish(2)} },
			text:   "worker A (layers [0,15)) was lost after 2 tokens; replanned onto C (layers [0,15))",
			lines:  1, replays: 1, moved: []string{"C", "B"}},
		{name: "backend failure without a lost worker is returned", spare: []string{"C"},
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.failing(2, unavailable, false, 0)} },
			want:   unavailable, text: "ActorDiedError"},
		{name: "invalid argument is not waited on", spare: []string{"C"},
			script: func(sw *fakeSwarm) []attempt {
				return []attempt{sw.failing(0, status.Error(codes.InvalidArgument, "max_tokens"), false, 0)}
			},
			want: status.Error(codes.InvalidArgument, "max_tokens"), text: "max_tokens"},
		{name: "no spare worker",
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(1, 1)} },
			want:   ErrUnavailable, text: "worker B (layers [15,30)) was lost after 1 token, and no other worker can hold its layers (0 other workers found)"},
		{name: "never back onto a worker lost before", spare: []string{"C", "D"},
			script: func(sw *fakeSwarm) []attempt {
				return []attempt{sw.stageLost(1, 1), sw.stageLost(1, 1), finish(1)}
			},
			text:  "replanned onto D (layers [15,30))",
			lines: 2, replays: 2, moved: []string{"A", "D"}},
		{name: "gave up after two failovers", spare: []string{"C", "D", "E"},
			script: func(sw *fakeSwarm) []attempt {
				return []attempt{sw.stageLost(1, 0), sw.stageLost(1, 0), sw.stageLost(1, 0)}
			},
			want: ErrUnavailable, text: "was lost after 3 tokens; gave up after 2 failovers", lines: 2, replays: 2},
		{name: "a refusing replacement is skipped", spare: []string{"C", "D"}, refuse: []string{"C"},
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(2, 1), finish(1)} },
			text:   "replanned onto D", lines: 1, replays: 1, moved: []string{"A", "D"}},
		{name: "every replacement refuses", spare: []string{"C", "D", "E"}, refuse: []string{"C", "D", "E"},
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(2, 1)} },
			want:   ErrUnavailable, text: "was lost after 2 tokens, and its replacements refused"},
		{name: "P/D: a lost decode worker is replaced", spare: []string{"C"}, pd: true,
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(4, 1), finish(2)} },
			text:   "decode worker B was lost after 4 tokens; replanned onto C (layers [0,30)), replaying",
			lines:  1, replays: 1, moved: []string{"A", "C"}},
		{name: "P/D: no spare decode worker", pd: true,
			script: func(sw *fakeSwarm) []attempt { return []attempt{sw.stageLost(4, 1)} },
			want:   ErrUnavailable, text: "decode worker B was lost after 4 tokens, and no other worker can hold its layers (0 other workers found)"},
		{name: "P/D: a lost prefill worker is the backend's to cover", spare: []string{"C"}, pd: true,
			script: func(sw *fakeSwarm) []attempt {
				return []attempt{func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
					sw.session("A").lose()
					return finish(3)(ctx, req, onResp)
				}}
			},
			moved: []string{"A", "B"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B")
			h := &fakeHead{sw: sw}
			req := Request{Model: model, Stages: 2}
			if tt.pd {
				req = Request{Model: model, PrefillPeer: "A", DecodePeer: "B"}
			}
			var lines []string
			c := form(t, sw, h, req, OnFailover(func(l string) { lines = append(lines, l) }))
			if got := stageIDs(c); !slices.Equal(got, []string{"A", "B"}) {
				t.Fatalf("formed on %v; want A, B", got)
			}
			sw.setPeers(append([]string{"A", "B"}, tt.spare...)...)
			for _, id := range tt.refuse {
				sw.refuse[id] = true
			}
			h.script(tt.script(sw)...)

			tokens, err := collect(t.Context(), c, "r")
			checkOutcome(t, err, tt.want, tt.text, lines)
			if len(lines) != tt.lines {
				t.Errorf("failover lines %q; want %d", lines, tt.lines)
			}
			sent := h.sent()
			if len(sent) != 1+tt.replays {
				t.Fatalf("%d attempts; want %d", len(sent), 1+tt.replays)
			}
			for i, r := range sent[1:] {
				if r.GetRequestId() != fmt.Sprintf("r-f%d", i+1) || !isPrefix(r.GetResumeTokenIds(), tokens) {
					t.Errorf("replay %d: id %q, resume %v; want r-f%d resuming %v", i+1, r.GetRequestId(), r.GetResumeTokenIds(), i+1, tokens)
				}
			}
			if err == nil && !slices.Equal(tokens, seq(len(tokens))) {
				t.Errorf("tokens %v; want each once, in order", tokens)
			}
			if tt.moved != nil {
				if got := stageIDs(c); !slices.Equal(got, tt.moved) {
					t.Errorf("stages on %v; want %v (survivors keep their layers)", got, tt.moved)
				}
			}
		})
	}
}

// checkOutcome checks Generate's error against want and text (in the
// error, or in the failover lines when want is nil).
func checkOutcome(t *testing.T, err, want error, text string, lines []string) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("Generate: %v", err)
	case want == nil && text != "" && !strings.Contains(strings.Join(lines, "\n"), text):
		t.Errorf("failover lines %q; want one with %q", lines, text)
	case want != nil && !errors.Is(err, want) && status.Code(err) != status.Code(want):
		t.Fatalf("Generate: %v; want %v", err, want)
	case want != nil && !strings.Contains(fmt.Sprint(err), text):
		t.Errorf("Generate: %v; want %q in it", err, text)
	}
}

// stageIDs are the peers of c's stages, in order.
func stageIDs(c *Cluster) []string {
	var ids []string
	for _, s := range c.Stages() {
		ids = append(ids, s.PeerID)
	}
	return ids
}

// isPrefix reports whether p is a prefix of s.
func isPrefix(p, s []uint32) bool { return len(p) <= len(s) && slices.Equal(p, s[:len(p)]) }

// seq is 0, 1, ..., n-1.
func seq(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(i)
	}
	return out
}

// TestMaybeLoss: which generation failures wait for a session to report its
// worker lost before failing over.
func TestMaybeLoss(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "a stage failed: ActorDiedError"), true},
		{fmt.Errorf("generate: %w", status.Error(codes.Internal, "stream broke")), true},
		{status.Error(codes.Unknown, "?"), true},
		{status.Error(codes.Aborted, "?"), true},
		{status.Error(codes.InvalidArgument, "max_tokens"), false},
		{status.Error(codes.Canceled, "aborted"), false},
		{status.Error(codes.NotFound, "model"), false},
		{errors.New("plain"), false},
		{fmt.Errorf("x: %w", &workerLost{peer: "A", s: &fakeSession{lost: make(chan struct{})}}), true},
	}
	for _, tt := range tests {
		if got := maybeLoss(tt.err); got != tt.want {
			t.Errorf("maybeLoss(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestWording: how failover lines and errors name workers and counts.
func TestWording(t *testing.T) {
	plan := planner.Plan{Stages: []planner.Stage{{PeerID: "A", Start: 0, End: 15}, {PeerID: "B", Start: 15, End: 30}}}
	tests := []struct{ got, want string }{
		{plural(0, "token"), "0 tokens"},
		{plural(1, "token"), "1 token"},
		{plural(7, "other worker"), "7 other workers"},
		{describe(plan, []int{1}), "worker B (layers [15,30))"},
		{describe(plan, []int{0, 1}), "worker A (layers [0,15)) and worker B (layers [15,30))"},
		{describeMoved(plan, []int{0, 1}), "A (layers [0,15)), B (layers [15,30))"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestFailoverOverKnownPeers: a failover soon after forming re-plans over
// the workers the cluster was planned from, with no discovery (a discovery
// right after a link cut waits for the cut peer); once they are old, it
// discovers again.
func TestFailoverOverKnownPeers(t *testing.T) {
	tests := []struct {
		name      string
		age       time.Duration // of the peers the plan was chosen from
		silentC   bool          // C, the known spare, is gone too; D appeared since
		to        string
		discovers int // during the failover
	}{
		{name: "recent: no discovery", age: 0, to: "C", discovers: 0},
		{name: "old: discovered again", age: knownPeersFor + time.Second, to: "C", discovers: 1},
		{name: "known spare silent: discovered again", silentC: true, to: "D", discovers: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B", "C")
			h := &fakeHead{sw: sw}
			c := form(t, sw, h, Request{Model: model, Stages: 2})
			if got := stageIDs(c); !slices.Equal(got, []string{"A", "B"}) {
				t.Fatalf("formed on %v; want A, B", got)
			}
			c.knownAt = c.knownAt.Add(-tt.age)
			if tt.silentC {
				sw.silent["C"] = true
				sw.setPeers("A", "B", "C", "D")
			}
			before := sw.discovers
			h.script(sw.stageLost(3, 1), finish(2))
			if _, err := collect(t.Context(), c, "r"); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if got := stageIDs(c); !slices.Equal(got, []string{"A", tt.to}) {
				t.Errorf("stages on %v; want A, %s", got, tt.to)
			}
			if got := sw.discovers - before; got != tt.discovers {
				t.Errorf("%d discoveries during the failover; want %d", got, tt.discovers)
			}
		})
	}
}

// TestConcurrentFailover: generations running at once on a cluster whose
// worker is lost fail over together: the worker is replaced once (one join,
// one warning line), and each generation replays its own tokens so far on
// the new plan. When no worker can take the layers, every one of them fails
// with the same reason after a single search.
func TestConcurrentFailover(t *testing.T) {
	const n = 4
	for _, spare := range []bool{true, false} {
		t.Run(fmt.Sprintf("spare=%v", spare), func(t *testing.T) {
			sw := newFakeSwarm("A", "B")
			h := &fakeHead{sw: sw}
			var (
				mu    sync.Mutex
				lines []string
			)
			c := form(t, sw, h, Request{Model: model, Stages: 2}, OnFailover(func(l string) {
				mu.Lock()
				defer mu.Unlock()
				lines = append(lines, l)
			}))
			if spare {
				sw.setPeers("A", "B", "C")
			}
			streamed := together(n)
			for i := range n { // generation i streams i+1 tokens; then B is lost under all of them
				h.script(func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
					if err := stream(req, onResp, i+1, false); err != nil {
						return err
					}
					streamed()
					sw.session("B").lose()
					<-ctx.Done()
					return status.FromContextError(ctx.Err()).Err()
				})
			}
			h.script(finish(2), finish(2), finish(2), finish(2))
			joinsBefore, discoversBefore := len(sw.joins), sw.discovers

			var wg sync.WaitGroup
			tokens := make([][]uint32, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					// Generations start in order, so generation i gets attempt i.
					time.Sleep(time.Duration(i) * 20 * time.Millisecond)
					tokens[i], errs[i] = collect(t.Context(), c, fmt.Sprintf("r%d", i))
				})
			}
			wg.Wait()
			if spare {
				for i := range n {
					if errs[i] != nil || !slices.Equal(tokens[i], seq(i+3)) {
						t.Errorf("r%d: %v, tokens %v; want %v", i, errs[i], tokens[i], seq(i+3))
					}
				}
				if len(lines) != 1 || len(sw.joins)-joinsBefore != 1 {
					t.Errorf("failover lines %q, %d joins; want one replacement", lines, len(sw.joins)-joinsBefore)
				}
				if got := stageIDs(c); !slices.Equal(got, []string{"A", "C"}) {
					t.Errorf("stages on %v; want A, C", got)
				}
				for _, r := range h.sent()[n:] {
					var i int
					if _, err := fmt.Sscanf(r.GetRequestId(), "r%d-f1", &i); err != nil || !slices.Equal(r.GetResumeTokenIds(), seq(i+1)) {
						t.Errorf("replay %s resumes %v; want its own tokens so far", r.GetRequestId(), r.GetResumeTokenIds())
					}
				}
				return
			}
			for i, err := range errs {
				if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no other worker can hold its layers") {
					t.Errorf("r%d: %v; want unavailable, no worker for the layers", i, err)
				}
			}
			if got := sw.discovers - discoversBefore; got != 1 || len(lines) != 0 {
				t.Errorf("%d searches, lines %q; want one search, no line", got, lines)
			}
			waitClosed(t, c.Done(), "Done after the failed failover")
		})
	}
}
