package serve

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// fakeCluster is a test double of a formed cluster: it answers one token and
// records Close; lose() makes it go bad as a lost member would.
type fakeCluster struct {
	model string
	pd    bool // its stages are a prefill/decode run's

	mu       sync.Mutex
	closed   bool
	gens     int
	running  int
	done     chan struct{}
	doneOnce sync.Once
	hold     chan struct{} // requests with id "hold" wait for it
}

func (c *fakeCluster) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	c.mu.Lock()
	c.gens++
	c.running++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
	}()
	switch req.GetRequestId() {
	case "hold":
		<-c.hold
	case "broken":
		return status.Error(codes.Unavailable, "the Ray head is gone")
	case "bad":
		return status.Error(codes.InvalidArgument, "prompt too long")
	}
	return onResp(&pb.GenerateResponse{Text: "ok", FinishReason: pb.FinishReason_FINISH_REASON_STOP})
}
func (c *fakeCluster) Done() <-chan struct{} { return c.done }
func (c *fakeCluster) Stages() []requester.Stage {
	if c.pd {
		return []requester.Stage{{PeerID: "p", End: 30, Role: pb.StageRole_STAGE_ROLE_PREFILL},
			{PeerID: "d", End: 30, Role: pb.StageRole_STAGE_ROLE_DECODE}}
	}
	return []requester.Stage{{PeerID: "p", End: 30}}
}
func (c *fakeCluster) Err() error {
	select {
	case <-c.done:
		return errors.New("lost")
	default:
		return nil
	}
}
func (c *fakeCluster) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.lose()
}
func (c *fakeCluster) lose() { c.doneOnce.Do(func() { close(c.done) }) }
func (c *fakeCluster) generations() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gens
}
func (c *fakeCluster) runningNow() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}
func (c *fakeCluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// fakeFormer forms fakeClusters, or fails with err.
// pd forms prefill/decode clusters; hints records what each form was told.
type fakeFormer struct {
	mu     sync.Mutex
	formed []*fakeCluster
	hints  []routeHint
	err    error
	pd     bool
}

func (f *fakeFormer) form(_ context.Context, req requester.Request, hint routeHint, _ func(string)) (formedCluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hints = append(f.hints, hint)
	if f.err != nil {
		return nil, f.err
	}
	c := &fakeCluster{model: req.Model, pd: f.pd, done: make(chan struct{}), hold: make(chan struct{})}
	f.formed = append(f.formed, c)
	return c, nil
}

func (f *fakeFormer) clusters() []*fakeCluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*fakeCluster(nil), f.formed...)
}

func newTestPool(f *fakeFormer, idle time.Duration) (*clusterPool, *atomic.Int32) {
	open := &atomic.Int32{}
	return &clusterPool{former: f, template: requester.Request{Stages: 2}, idle: idle,
		log: slog.New(slog.DiscardHandler), onOpen: func(o bool) {
			if o {
				open.Add(1)
			} else {
				open.Add(-1)
			}
		}}, open
}

func generate(t *testing.T, p *clusterPool, model string) error {
	t.Helper()
	_, err := p.generate(context.Background(), &pb.GenerateRequest{Model: model}, requester.Prefix{},
		func(*pb.GenerateResponse) error { return nil })
	return err
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClusterPool(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, f *fakeFormer, p *clusterPool)
		// formed is how many clusters the run forms; open how many stay open.
		formed, open int
	}{
		{"reused between requests", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			for range 3 {
				if err := generate(t, p, "m"); err != nil {
					t.Fatal(err)
				}
			}
			if c := f.clusters()[0]; c.generations() != 3 {
				t.Errorf("generations on the warm cluster: %d, want 3", c.generations())
			}
		}, 1, 1},
		{"another model replaces it", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			for _, m := range []string{"a", "b", "b"} {
				if err := generate(t, p, m); err != nil {
					t.Fatal(err)
				}
			}
			if !f.clusters()[0].isClosed() || f.clusters()[1].isClosed() {
				t.Error("a's cluster must close when b's forms, b's stay")
			}
		}, 2, 1},
		{"a member lost while idle closes it; the next request forms anew", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
			first := f.clusters()[0]
			first.lose()
			eventually(t, "the pool drops the bad cluster", first.isClosed)
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
		}, 2, 1},
		{"closed after the idle timeout", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			p.idle = 20 * time.Millisecond
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the idle cluster closes", f.clusters()[0].isClosed)
		}, 1, 0},
		{"a failed form keeps nothing", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			f.err = requester.ErrUnavailable
			if err := generate(t, p, "m"); !errors.Is(err, requester.ErrUnavailable) {
				t.Fatalf("err %v, want ErrUnavailable", err)
			}
			f.err = nil
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
		}, 1, 1},
		{"a broken generation drops it, a bad request does not", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			for _, id := range []string{"bad", "ok", "broken", "ok"} {
				_, _ = p.generate(context.Background(), &pb.GenerateRequest{Model: "m", RequestId: id}, requester.Prefix{},
					func(*pb.GenerateResponse) error { return nil })
			}
			if cs := f.clusters(); !cs[0].isClosed() || cs[0].generations() != 3 || cs[1].isClosed() {
				t.Error("want the first cluster kept through the bad request, dropped after the broken one")
			}
		}, 2, 1},
		{"generations run at once; a broken one closes it after the others", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			const n = 4
			errs := make(chan error, n)
			for range n {
				go func() {
					_, err := p.generate(context.Background(), &pb.GenerateRequest{Model: "m", RequestId: "hold"}, requester.Prefix{},
						func(*pb.GenerateResponse) error { return nil })
					errs <- err
				}()
			}
			eventually(t, "four generations on one cluster at once", func() bool {
				cs := f.clusters()
				return len(cs) == 1 && cs[0].runningNow() == n
			})
			first := f.clusters()[0]
			if _, err := p.generate(context.Background(), &pb.GenerateRequest{Model: "m", RequestId: "broken"}, requester.Prefix{},
				func(*pb.GenerateResponse) error { return nil }); err == nil {
				t.Fatal("the broken generation succeeded")
			}
			time.Sleep(20 * time.Millisecond)
			if first.isClosed() {
				t.Fatal("the broken generation closed the cluster under the others")
			}
			close(first.hold)
			for range n {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			eventually(t, "the broken cluster closes", first.isClosed)
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
		}, 2, 1},
		{"the forming request's prefix reaches the plan; its route is the cluster's", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			f.pd = true
			seven := int32(7)
			for _, tokens := range []int{480, 64} {
				req := &pb.GenerateRequest{Model: "m", Sampling: &pb.SamplingParams{MaxTokens: &seven}}
				route, err := p.generate(context.Background(), req, requester.Prefix{Tokens: tokens, PromptTokens: 500},
					func(*pb.GenerateResponse) error { return nil })
				if err != nil || route != "pd" {
					t.Fatalf("route %q, err %v; want pd (the planner chose it for the formed cluster)", route, err)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.hints) != 1 || f.hints[0].prefix.Tokens != 480 || f.hints[0].prefix.PromptTokens != 500 || f.hints[0].answer != 7 {
				t.Errorf("hints %+v; want the first request's prefix and answer length, once", f.hints)
			}
		}, 1, 1},
		{"close ends it", func(t *testing.T, f *fakeFormer, p *clusterPool) {
			if err := generate(t, p, "m"); err != nil {
				t.Fatal(err)
			}
			p.close()
			if !f.clusters()[0].isClosed() {
				t.Error("close left the cluster open")
			}
		}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFormer{}
			p, open := newTestPool(f, time.Hour)
			tt.run(t, f, p)
			if got := len(f.clusters()); got != tt.formed {
				t.Errorf("formed %d clusters, want %d", got, tt.formed)
			}
			eventually(t, "the open-clusters gauge settles", func() bool { return open.Load() == int32(tt.open) })
		})
	}
}

func TestRouteOf(t *testing.T) {
	for req, want := range map[requester.Request]string{
		{Stages: 2}:                            "pipeline",
		{PrefillPeer: "a", DecodePeer: "b"}:    "pd",
		{Stages: 0, MaxPricePer1kMicros: 1000}: "pipeline",
	} {
		if got := routeOf(req); got != want {
			t.Errorf("routeOf(%+v) = %q, want %q", req, got, want)
		}
	}
}
