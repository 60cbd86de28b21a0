package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/inferencerpc"
	"github.com/edgellm/edgellm/internal/privdir"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// The session daemon: `edgellm session serve --id ID ...` (hidden; started
// by `session open`, detached in its own session, output to
// <data-dir>/sessions/<id>.log).
//
// Decisions:
//   - The daemon forms the cluster exactly as a one-shot infer does
//     (formCluster: discover, plan, Ray head, every stage's worker joins),
//     then serves the backend's own gRPC Inference service (Generate, Abort)
//     on a unix socket, so `infer --session` talks to it with the same client
//     and streams exactly as a local infer. Only then does it write its
//     record, which is what `session open` waits for.
//   - One generation at a time runs on the cluster (a pipeline of one stage
//     per worker has no batching yet); others wait their turn, each bounded
//     by its own caller's context.
//   - The session closes itself after --idle-timeout with no generation
//     running or waiting; SIGTERM (`session close`) closes it too. Closing
//     removes the record first (so nobody new finds it), cancels what runs,
//     stops the gRPC server, closes the cluster (workers leave, head stops,
//     backend and node close), then removes the socket and the log. A daemon
//     that fails keeps its log: `session open` prints its last line.
//   - A request's model must be the session's (or empty); its plan is always
//     the session's own.

const (
	// defaultIdleTimeout closes a session nobody used for this long.
	defaultIdleTimeout = 10 * time.Minute
	// maxIdleTimeout bounds --idle-timeout (a forgotten session holds
	// volunteers' machines).
	maxIdleTimeout = 7 * 24 * time.Hour
	// serverStopGrace is how long running calls get to end once the session
	// closes, before the gRPC server cuts them.
	serverStopGrace = 10 * time.Second
)

// heldCluster is what a session holds: the requester's side of one formed
// cluster (a swarmCluster, from formCluster).
type heldCluster interface {
	// Generate runs req on the cluster (filling in Model and Plan); onResp
	// gets every streamed response in order.
	Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error
	// Stages is the current plan in infer --json's shape.
	Stages() []stageJSON
	// WeightsCID is the CID of the weights the plan runs.
	WeightsCID() string
	// Close has the workers leave, stops the head, closes backend and node.
	Close()
}

// sessionServeOptions are the daemon's flags; `session open` passes its own
// through.
type sessionServeOptions struct {
	id    string
	model string
	idle  time.Duration
	dist  distOptions
}

func (o *sessionServeOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.model, "model", "", "model id (default $EDGELLM_MODEL, else node.model, else smollm2-135m)")
	f.DurationVar(&o.idle, "idle-timeout", defaultIdleTimeout, "close the session after this long with no request")
	o.dist.register(cmd)
	// A session always runs across the swarm.
	_ = f.MarkHidden("local")
}

func (o *sessionServeOptions) validate() error {
	if o.dist.local {
		return fmt.Errorf("%w: a session runs across the swarm; --local makes no sense with it", ErrUsage)
	}
	if o.idle <= 0 || o.idle > maxIdleTimeout {
		return fmt.Errorf("%w: --idle-timeout must be positive and at most %s", ErrInvalidArgument, maxIdleTimeout)
	}
	return o.dist.validate()
}

func newSessionServeCommand(app *App) *cobra.Command {
	o := &sessionServeOptions{}
	cmd := &cobra.Command{
		Use:    "serve --id ID [flags]",
		Short:  "Hold a session's cluster (started by session open)",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE:   func(cmd *cobra.Command, _ []string) error { return app.serveSession(cmd, o) },
	}
	cmd.Flags().StringVar(&o.id, "id", "", "session id (32 hex characters)")
	o.register(cmd)
	return cmd
}

// serveSession is the daemon: form the cluster, serve it on the socket
// until closed or idle, tear everything down.
func (app *App) serveSession(cmd *cobra.Command, o *sessionServeOptions) error {
	if !isSessionID(o.id) {
		return fmt.Errorf("%w: --id must be a session id (32 hex characters)", ErrInvalidArgument)
	}
	if err := o.validate(); err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	if o.model == "" {
		o.model = cfg.Node.Model
	}
	paths := newSessionPaths(cfg.DataDir, o.id)
	if err := paths.mkdir(); err != nil {
		return err
	}
	signal.Ignore(syscall.SIGHUP) // detached; no terminal to lose
	fmt.Fprintf(app.stderr, "session %s: forming the cluster for %s (pid %d)\n", o.id, o.model, os.Getpid())

	// The Inference stream has no place for a warning, so a failover's line
	// goes to the session's log; the answer continues as usual.
	cluster, err := app.formCluster(app.interrupt, cfg, o.model, &o.dist,
		requester.OnFailover(func(line string) { fmt.Fprintf(app.stderr, "session %s: %s\n", o.id, line) }))
	if err != nil {
		return err
	}
	closed := false
	closeCluster := func() {
		if !closed {
			closed = true
			cluster.Close()
		}
	}
	defer closeCluster()

	sock := paths.socket()
	if err := privdir.Ensure(filepath.Dir(sock)); err != nil {
		return fmt.Errorf("session socket: %w", err)
	}
	lis, err := inferencerpc.ListenUnix(sock)
	if err != nil {
		return err
	}
	svc := newSessionService(cluster, o.model, o.idle)
	srv := grpc.NewServer()
	pb.RegisterInferenceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	info := &sessionInfo{ID: o.id, PID: os.Getpid(), Socket: sock, Model: o.model, WeightsCID: cluster.WeightsCID(),
		Stages: cluster.Stages(), Created: time.Now().UTC().Truncate(time.Second), IdleTimeout: o.idle.String(),
		Log: paths.log()}
	if err := paths.writeInfo(info); err != nil {
		srv.Stop()
		paths.removeFiles(sock, false)
		return fmt.Errorf("write the session record: %w", err)
	}
	fmt.Fprintf(app.stderr, "session %s: ready on %s (%d stages, idle timeout %s)\n", o.id, sock, len(info.Stages), o.idle)

	reason := ""
	select {
	case <-app.interrupt.Done():
		reason = "closed"
	case <-svc.idleDone:
		reason = "idle for " + o.idle.String()
	case err := <-served:
		reason = fmt.Sprintf("server stopped: %v", err)
	}
	fmt.Fprintf(app.stderr, "session %s: closing (%s)\n", o.id, reason)
	_ = os.Remove(paths.info()) // nobody new finds it
	svc.shutdown()
	inferencerpc.Stop(srv, serverStopGrace)
	closeCluster()
	paths.removeFiles(sock, false)
	fmt.Fprintf(app.stderr, "session %s: closed\n", o.id)
	_ = os.Remove(paths.log()) // a clean close leaves nothing behind
	return nil
}

// errSessionClosing ends generations cut short by the session closing.
var errSessionClosing = errors.New("the session is closing")

// errAborted ends a generation stopped by Abort.
var errAborted = errors.New("aborted")

// sessionService is the Inference service over a held cluster.
type sessionService struct {
	pb.UnimplementedInferenceServer
	cluster heldCluster
	model   string
	idle    time.Duration
	turn    chan struct{} // one generation at a time

	mu       sync.Mutex
	active   int                                // generations running or waiting their turn
	requests map[string]context.CancelCauseFunc // by request id
	lastEnd  time.Time                          // when active last became 0
	closing  bool
	timer    *time.Timer
	idleDone chan struct{} // closed once the session has been idle for idle
}

func newSessionService(c heldCluster, model string, idle time.Duration) *sessionService {
	s := &sessionService{cluster: c, model: model, idle: idle, turn: make(chan struct{}, 1),
		requests: map[string]context.CancelCauseFunc{}, lastEnd: time.Now(), idleDone: make(chan struct{})}
	s.timer = time.AfterFunc(idle, s.idleCheck)
	return s
}

// idleCheck closes idleDone when nothing ran for the idle timeout. A stale
// timer (a request came and went meanwhile) finds lastEnd too recent and
// does nothing: end re-armed it.
func (s *sessionService) idleCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.active > 0 || time.Since(s.lastEnd) < s.idle {
		return
	}
	s.closing = true
	close(s.idleDone)
}

// begin registers a generation; it fails once the session is closing.
func (s *sessionService) begin(id string, cancel context.CancelCauseFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return status.Error(codes.Unavailable, errSessionClosing.Error())
	}
	if _, dup := s.requests[id]; dup {
		return status.Errorf(codes.AlreadyExists, "request id %q is already running in this session", id)
	}
	s.requests[id] = cancel
	s.active++
	s.timer.Stop()
	return nil
}

func (s *sessionService) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	s.active--
	if s.active == 0 {
		s.lastEnd = time.Now()
		s.timer.Reset(s.idle)
	}
}

// shutdown refuses new generations and cancels the running and waiting
// ones.
func (s *sessionService) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	s.timer.Stop()
	for _, cancel := range s.requests {
		cancel(errSessionClosing)
	}
}

// Generate implements pb.InferenceServer: it waits for the cluster, then
// runs req on it and streams every response.
func (s *sessionService) Generate(req *pb.GenerateRequest, stream grpc.ServerStreamingServer[pb.GenerateResponse]) error {
	if m := req.GetModel(); m != "" && m != s.model {
		return status.Errorf(codes.InvalidArgument, "this session serves %s, not %s", s.model, m)
	}
	if req.GetPlan() != nil {
		return status.Error(codes.InvalidArgument, "a session request carries no plan: the session's cluster runs it")
	}
	if req.GetRequestId() == "" {
		req.RequestId = "session-" + newSessionID()[:16]
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	if err := s.begin(req.GetRequestId(), cancel); err != nil {
		return err
	}
	defer s.end(req.GetRequestId())
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return ctxStatus(ctx)
	}
	defer func() { <-s.turn }()
	if ctx.Err() != nil {
		return ctxStatus(ctx)
	}
	req.Model = s.model
	err := s.cluster.Generate(ctx, req, stream.Send)
	if err != nil && ctx.Err() != nil {
		return ctxStatus(ctx)
	}
	return errorStatus(err)
}

// Abort implements pb.InferenceServer: it cancels a running or waiting
// generation of this session.
func (s *sessionService) Abort(_ context.Context, req *pb.AbortRequest) (*pb.AbortResponse, error) {
	s.mu.Lock()
	cancel, ok := s.requests[req.GetRequestId()]
	s.mu.Unlock()
	if ok {
		cancel(errAborted)
	}
	return &pb.AbortResponse{Aborted: ok}, nil
}

// ctxStatus is the status of a generation whose context ended: aborted or
// closing (its cause), or the caller gone.
func ctxStatus(ctx context.Context) error {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errAborted):
		return status.Error(codes.Canceled, "aborted")
	case errors.Is(cause, errSessionClosing):
		return status.Error(codes.Unavailable, errSessionClosing.Error())
	default:
		return status.FromContextError(ctx.Err()).Err()
	}
}

// errorStatus turns a cluster error into a gRPC status with the code its
// exit code stands for, so `infer --session` exits as a one-shot infer
// would.
func errorStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return status.Convert(err).Err() // keeps the code; message is err's text
	}
	code := codes.Unknown
	switch ExitCode(err) {
	case ExitUsage:
		code = codes.InvalidArgument
	case ExitNotFound:
		code = codes.NotFound
	case ExitUnavailable:
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}
