package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/internal/linetail"
)

// unloadBudget bounds the best-effort UnloadModel calls of a staged stop.
const unloadBudget = 2 * time.Second

// StartError reports a backend that did not reach SERVING, with the tail of
// its stderr. It wraps ErrStartFailed and the cause.
type StartError struct {
	// Err is the cause, wrapping ErrStartFailed.
	Err error
	// Tail is the last lines the backend wrote to stderr, oldest first.
	Tail []string
}

// Error returns the cause followed by the stderr tail, one line each.
func (e *StartError) Error() string {
	if len(e.Tail) == 0 {
		return e.Err.Error() + " (backend wrote nothing to stderr)"
	}
	return fmt.Sprintf("%v; backend stderr (last %d lines):\n  %s",
		e.Err, len(e.Tail), strings.Join(e.Tail, "\n  "))
}

// Unwrap returns the cause.
func (e *StartError) Unwrap() error { return e.Err }

// process is one run of the backend: its command, connection and stderr tail.
type process struct {
	cmd     *exec.Cmd
	addr    string
	socket  string // unix socket path this supervisor owns, "" otherwise
	client  *grpcBackend
	tail    *linetail.Ring
	exited  chan struct{} // closed once the process has been waited for
	exitErr error         // set before exited is closed
}

// args builds the backend's command line.
func (c *settings) args(addr string) []string {
	args := []string{"-m", "edgellm.server", "--listen", addr, "--data-dir", c.dataDir,
		"--parent-pid", strconv.Itoa(os.Getpid())}
	for _, kv := range [][2]string{{"--models-dir", c.modelsDir}, {"--config", c.configFile}, {"--device", c.device}, {"--engine", c.engine}} {
		if kv[1] != "" {
			args = append(args, kv[0], kv[1])
		}
	}
	return args
}

// spawn starts the backend and waits until it reports SERVING; on failure it
// stops what it started and returns a *StartError.
func spawn(ctx context.Context, c *settings, addr, socket string) (*process, error) {
	p := &process{addr: addr, socket: socket, tail: linetail.New(c.stderrLines), exited: make(chan struct{})}
	if socket != "" {
		if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, &StartError{Err: fmt.Errorf("%w: stale socket: %w", ErrStartFailed, err)}
		}
	}
	client, err := dial(addr)
	if err != nil {
		return nil, &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err)}
	}
	p.client = client
	out := io.MultiWriter(p.tail, c.stderr)
	p.cmd = exec.Command(c.python, c.args(addr)...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.Env = append(append(os.Environ(), "PYTHONUNBUFFERED=1"), c.env...)
	p.cmd.SysProcAttr = sysProcAttr()
	p.cmd.WaitDelay = time.Second // a grandchild holding stderr open must not block Wait
	if err := p.cmd.Start(); err != nil {
		client.Close()
		return nil, &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err)}
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitServing(ctx); err != nil {
		p.stop(time.Second, false)
		return nil, &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err), Tail: p.tail.Lines()}
	}
	return p, nil
}

// pid returns the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// hasExited reports whether the process has ended.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitServing polls grpc.health.v1 with backoff until SERVING, the process
// exits, or ctx ends.
func (p *process) waitServing(ctx context.Context) error {
	delay := 10 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		ok, err := p.client.serving(attempt)
		cancel()
		if ok {
			return nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-p.exited:
			timer.Stop()
			return fmt.Errorf("exited before serving: %s", describeExit(p.exitErr))
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("not serving at %s (last health check: %v): %w", p.addr, err, context.Cause(ctx))
		case <-timer.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// stop ends the process in stages: UnloadModel for each loaded model (when
// unload is set and the process still runs), SIGTERM, wait up to grace,
// SIGKILL. It signals only this process, by its pid.
func (p *process) stop(grace time.Duration, unload bool) error {
	if unload && !p.hasExited() {
		p.unloadAll()
	}
	p.client.Close()
	defer p.removeSocket()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop backend pid %d: %w", p.pid(), err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill backend pid %d: %w", p.pid(), err)
	}
	<-p.exited
	return nil
}

// unloadAll asks the backend to unload its models, best effort.
func (p *process) unloadAll() {
	ctx, cancel := context.WithTimeout(context.Background(), unloadBudget)
	defer cancel()
	st, err := p.client.Status(ctx)
	if err != nil {
		return
	}
	for _, m := range st.GetLoadedModels() {
		_ = p.client.UnloadModel(ctx, m.GetId()) // best effort: SIGTERM follows
	}
}

// removeSocket deletes the socket file this supervisor created.
func (p *process) removeSocket() {
	if p.socket != "" {
		_ = os.Remove(p.socket) // already gone when the backend removed it
	}
}

// describeExit renders a Wait error: "exit status 3", "signal: killed".
func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
