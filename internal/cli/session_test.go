package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/inferencerpc"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// fakeCluster streams three responses per request; a request whose prompt
// is "block" waits until released or cancelled.
type fakeCluster struct {
	mu      sync.Mutex
	running int
	maxSeen int
	calls   int
	release chan struct{}
	started chan string
	closed  bool
}

func (f *fakeCluster) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	f.mu.Lock()
	f.running++
	f.calls++
	f.maxSeen = max(f.maxSeen, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	if req.GetPlan() != nil || req.GetModel() != "m" {
		return fmt.Errorf("fake: request not filled in by the session: %v", req)
	}
	if f.started != nil {
		f.started <- req.GetPrompt()
	}
	if req.GetPrompt() == "block" {
		select {
		case <-f.release:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if req.GetPrompt() == "lost" {
		return fmt.Errorf("%w: worker x was lost after 1 token, and no other worker can hold its layers", requester.ErrUnavailable)
	}
	for i := range 3 {
		resp := &pb.GenerateResponse{RequestId: req.GetRequestId(), Text: "t", TokenIds: []uint32{uint32(i)}}
		if i == 2 {
			resp.FinishReason = pb.FinishReason_FINISH_REASON_LENGTH
			resp.Timings = &pb.Timings{TtftMs: 1}
		}
		if err := onResp(resp); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeCluster) Stages() []stageJSON { return []stageJSON{{PeerID: "p", LayerEnd: 30}} }
func (f *fakeCluster) WeightsCID() string  { return "bafk-m" }
func (f *fakeCluster) Close()              { f.closed = true }

// serveFake serves a session service over fc on a unix socket and returns a
// client of it.
func serveFake(t *testing.T, fc *fakeCluster, idle time.Duration) (*sessionService, backend.Backend) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := inferencerpc.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v, %v; want 0600", fi.Mode(), err)
	}
	svc := newSessionService(fc, "m", idle)
	srv := grpc.NewServer()
	pb.RegisterInferenceServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	b, err := backend.Dial("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return svc, b
}

func prompt(id, p string) *pb.GenerateRequest {
	return &pb.GenerateRequest{RequestId: id, Model: "m", Input: &pb.GenerateRequest_Prompt{Prompt: p}}
}

// TestSessionService: the daemon's Inference service runs one generation at
// a time on the held cluster, streams every response, aborts by request id,
// maps cluster errors to the codes infer's exit codes come from, refuses a
// foreign model or a plan, and reports idleness only with nothing running.
func TestSessionService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fc := &fakeCluster{release: make(chan struct{}), started: make(chan string, 8)}
	svc, b := serveFake(t, fc, time.Hour)

	var got []uint32
	if err := b.Generate(ctx, prompt("a", "hi"), func(r *pb.GenerateResponse) error {
		got = append(got, r.GetTokenIds()...)
		return nil
	}); err != nil || len(got) != 3 {
		t.Fatalf("generate: %v, tokens %v", err, got)
	}
	<-fc.started

	// One at a time: a second request waits while "block" runs.
	errs := make(chan error, 2)
	go func() {
		errs <- b.Generate(ctx, prompt("blk", "block"), func(*pb.GenerateResponse) error { return nil })
	}()
	if p := <-fc.started; p != "block" {
		t.Fatalf("started %q first", p)
	}
	nextErr := make(chan error, 1)
	go func() {
		nextErr <- b.Generate(ctx, prompt("next", "hi"), func(*pb.GenerateResponse) error { return nil })
	}()
	waitFor(t, func() bool { svc.mu.Lock(); defer svc.mu.Unlock(); return svc.active == 2 })
	if ok, err := b.Abort(ctx, "blk"); !ok || err != nil {
		t.Fatalf("abort: %v, %v", ok, err)
	}
	if err := <-errs; status.Code(err) != codes.Canceled {
		t.Errorf("aborted generation: %v; want CANCELLED", err)
	}
	if err := <-nextErr; err != nil {
		t.Errorf("waiting generation: %v", err)
	}
	<-fc.started
	if fc.maxSeen != 1 {
		t.Errorf("%d generations ran at once; want 1", fc.maxSeen)
	}
	if ok, _ := b.Abort(ctx, "nothing"); ok {
		t.Error("abort of an unknown request reported true")
	}

	none := func(*pb.GenerateResponse) error { return nil }
	if err := b.Generate(ctx, prompt("l", "lost"), none); status.Code(err) != codes.Unavailable || ExitCode(err) != ExitUnavailable {
		t.Errorf("lost worker: %v (exit %d); want UNAVAILABLE, exit 4", err, ExitCode(err))
	}
	<-fc.started
	other := prompt("o", "hi")
	other.Model = "other"
	if err := b.Generate(ctx, other, none); status.Code(err) != codes.InvalidArgument {
		t.Errorf("other model: %v; want INVALID_ARGUMENT", err)
	}
	planned := prompt("p", "hi")
	planned.Plan = &pb.Plan{SessionId: "x"}
	if err := b.Generate(ctx, planned, none); status.Code(err) != codes.InvalidArgument {
		t.Errorf("request with a plan: %v; want INVALID_ARGUMENT", err)
	}

	// Closing cancels what runs and refuses what comes.
	go func() { errs <- b.Generate(ctx, prompt("blk2", "block"), none) }()
	<-fc.started
	svc.shutdown()
	if err := <-errs; status.Code(err) != codes.Unavailable {
		t.Errorf("generation cut by close: %v; want UNAVAILABLE", err)
	}
	if err := b.Generate(ctx, prompt("late", "hi"), none); status.Code(err) != codes.Unavailable {
		t.Errorf("generation after close: %v; want UNAVAILABLE", err)
	}
}

// TestSessionIdle: the idle signal comes after the idle timeout with no
// request, never while one runs.
func TestSessionIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fc := &fakeCluster{release: make(chan struct{}), started: make(chan string, 8)}
	svc, b := serveFake(t, fc, 200*time.Millisecond)
	errs := make(chan error, 1)
	go func() {
		errs <- b.Generate(ctx, prompt("blk", "block"), func(*pb.GenerateResponse) error { return nil })
	}()
	<-fc.started
	time.Sleep(400 * time.Millisecond) // longer than the idle timeout, while busy
	select {
	case <-svc.idleDone:
		t.Fatal("idle while a generation ran")
	default:
	}
	close(fc.release)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	select {
	case <-svc.idleDone:
	case <-ctx.Done():
		t.Fatal("never idle")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSessionArgs(t *testing.T) {
	id := newSessionID()
	for _, tt := range []struct {
		arg  string
		want error
	}{
		{id, nil},
		{"", ErrInvalidArgument},
		{"../x", ErrInvalidArgument},
		{"a/b", ErrInvalidArgument},
		{"a\x00b", ErrInvalidArgument},
		{"nosuch", ErrNotFound},
		{id[:31], ErrNotFound},
		{"ABCDEF0123456789ABCDEF0123456789", ErrNotFound},
	} {
		if err := checkSessionArg(tt.arg); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("checkSessionArg(%q) = %v, want %v", tt.arg, err, tt.want)
		}
	}
}

// TestSessionFiles: a record round-trips; a record whose daemon is gone is
// not found and removed; list skips it.
func TestSessionFiles(t *testing.T) {
	dir := t.TempDir()
	id := newSessionID()
	p := newSessionPaths(dir, id)
	if err := p.mkdir(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p.dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("sessions dir mode %v", fi.Mode())
	}
	info := &sessionInfo{ID: id, PID: os.Getpid(), Socket: p.socket(), Model: "m", Stages: []stageJSON{{PeerID: "a"}}}
	if err := p.writeInfo(info); err != nil {
		t.Fatal(err)
	}
	back, err := p.readInfo()
	if err != nil || back.Model != "m" || len(back.Stages) != 1 {
		t.Fatalf("read back %+v, %v", back, err)
	}
	// This test process is not a session daemon: the record is stale.
	if _, err := liveSession(dir, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("liveSession of a stale record: %v; want not found", err)
	}
	if _, err := os.Stat(p.info()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale record not removed: %v", err)
	}
	if list, err := listSessions(dir); err != nil || len(list) != 0 {
		t.Errorf("list = %v, %v", list, err)
	}
	if _, err := liveSession(dir, newSessionID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown session: %v", err)
	}
	if e := (&exitCodeError{code: 3, msg: "x"}); ExitCode(e) != 3 || Message(e) != "x" {
		t.Errorf("exitCodeError maps to %d %q", ExitCode(e), Message(e))
	}
}
