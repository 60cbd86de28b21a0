package backend

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/privdir"
)

const (
	// exitGrace is how long a request that failed UNAVAILABLE waits to learn
	// whether the backend process died, to say so in the error.
	exitGrace = 2 * time.Second
	// restartBackoffMax caps the delay between failed restarts.
	restartBackoffMax = 10 * time.Second
)

var _ Backend = (*Supervisor)(nil)

// Supervisor runs the Python backend as a child process and serves Backend
// through it. It restarts a backend that dies (with backoff, at most
// MaxRestartsPerMinute), and Close stops it in stages. Requests made while a
// restart is under way wait for it.
type Supervisor struct {
	cfg    *settings
	addr   string
	socket string // the unix socket path this supervisor owns, "" otherwise
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	proc     *process      // the serving process; nil while restarting
	changed  chan struct{} // closed and replaced whenever proc, fatal or closed change
	fatal    error         // set when restarts were given up
	closed   bool
	restarts []time.Time // restart times within the last minute
}

// Start starts the backend and waits until it reports SERVING. ctx bounds
// only the start; the backend lives until Close. A start that fails returns
// a *StartError with the backend's stderr tail.
func Start(ctx context.Context, opts ...Option) (*Supervisor, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{cfg: cfg, addr: cfg.listen, changed: make(chan struct{})}
	if s.addr == "" {
		if s.socket, err = ownSocket(cfg); err != nil {
			return nil, err
		}
		s.addr = unixAddr(s.socket)
	}
	startCtx, cancel := context.WithTimeout(ctx, cfg.startTimeout)
	defer cancel()
	p, err := spawn(startCtx, cfg, s.addr, s.socket)
	if err != nil {
		return nil, err
	}
	cfg.logger.Info("backend serving", "pid", p.pid(), "addr", s.addr)
	s.proc = p
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.watch(p)
	return s, nil
}

// ownSocket picks the socket's path and makes its directory private (0700,
// this user's; the backend creates the socket itself 0600).
func ownSocket(cfg *settings) (string, error) {
	path, err := socketPath(cfg.dataDir, cfg.tmpDir, socketName())
	if err != nil {
		return "", err
	}
	if err := privdir.Ensure(filepath.Dir(path)); err != nil {
		return "", fmt.Errorf("%w: socket directory: %w", ErrStartFailed, err)
	}
	return path, nil
}

// Addr returns the backend's gRPC address.
func (s *Supervisor) Addr() string { return s.addr }

// Pid returns the pid of the serving backend process, 0 while none serves.
func (s *Supervisor) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.pid()
}

// Running reports, without waiting, whether a backend process serves now
// (false while a restart is under way, after giving up, and after Close).
func (s *Supervisor) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && !s.proc.hasExited() && !s.closed && s.fatal == nil
}

// current returns the serving process, waiting for a restart under way.
func (s *Supervisor) current(ctx context.Context) (*process, error) {
	for {
		s.mu.Lock()
		p, fatal, closed, changed := s.proc, s.fatal, s.closed, s.changed
		s.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case fatal != nil:
			return nil, fatal
		case p != nil && !p.hasExited():
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the backend to restart: %w", context.Cause(ctx))
		case <-changed:
		}
	}
}

// explain turns an UNAVAILABLE failure caused by the backend dying into an
// error that says so (wrapping ErrExited and the gRPC status).
func (s *Supervisor) explain(ctx context.Context, p *process, op string, err error) error {
	// A call in flight when the watcher closes the dead process's client
	// fails with CANCELED ("the client connection is closing") although its
	// caller cancelled nothing: that, too, is the backend dying.
	connClosed := status.Code(err) == codes.Canceled && ctx.Err() == nil
	if err == nil || (status.Code(err) != codes.Unavailable && !connClosed) {
		return err
	}
	timer := time.NewTimer(exitGrace)
	defer timer.Stop()
	select {
	case <-p.exited:
		if s.isClosed() {
			return fmt.Errorf("%w during %s: %w", ErrClosed, op, err)
		}
		return exitedError{fmt.Errorf("%w during %s (%s): %w", ErrExited, op, describeExit(p.exitErr), err)}
	case <-timer.C:
	case <-ctx.Done():
	}
	return err
}

// exitedError is a call that failed because the backend died: UNAVAILABLE
// (the caller may retry on the restarted backend), whichever code the broken
// connection gave the call (CANCELED when the watcher closed the client first).
type exitedError struct{ error }

func (e exitedError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

func (e exitedError) Unwrap() error { return e.error }

// isClosed reports whether Close was called.
func (s *Supervisor) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// setState changes the state under the lock and wakes waiters. It returns
// false, changing nothing, once the supervisor is closed.
func (s *Supervisor) setState(p *process, fatal error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.proc, s.fatal = p, fatal
	close(s.changed)
	s.changed = make(chan struct{})
	return true
}
