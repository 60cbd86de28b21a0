package ipfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgellm/edgellm/internal/linetail"
)

const (
	// restartBackoffMax caps the delay between failed restarts.
	restartBackoffMax = 10 * time.Second
	// tailLines is how many lines of the daemon's output a StartError shows.
	tailLines = 20
	// attachTimeout bounds the check for a daemon already running.
	attachTimeout = 2 * time.Second
)

// StartError reports a daemon that did not start, with the tail of its
// output. It wraps ErrStartFailed and the cause.
type StartError struct {
	Err  error
	Tail []string
}

func (e *StartError) Error() string {
	if len(e.Tail) == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("%v; ipfs output (last %d lines):\n  %s", e.Err, len(e.Tail), strings.Join(e.Tail, "\n  "))
}

func (e *StartError) Unwrap() error { return e.Err }

// Daemon is a supervised Kubo daemon, or one found already running on the
// same repository (then Close leaves it running).
type Daemon struct {
	opts     Options
	client   *Client
	gateway  string // gateway URL, "" when off
	attached bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	proc     *kuboProc // nil while restarting or after giving up
	fatal    error
	closed   bool
	restarts []time.Time
}

// kuboProc is one run of `ipfs daemon`.
type kuboProc struct {
	cmd     *exec.Cmd
	tail    *linetail.Ring
	exited  chan struct{}
	exitErr error
}

// Start starts a Kubo daemon on opts.RepoDir (initialising it on first use)
// and waits until its API answers; or, when a daemon already serves that
// repository, attaches to it. ctx bounds only the start.
func Start(ctx context.Context, opts Options) (*Daemon, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	unlock, err := lockStart(startCtx, o.RepoDir)
	if err != nil {
		return nil, &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err)}
	}
	defer unlock()
	if d, err := attach(ctx, o); d != nil || err != nil {
		if err != nil {
			return nil, &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err)}
		}
		o.Logger.Info("ipfs: using the daemon already running on the repository", "api", d.client.URL())
		return d, nil
	}
	d := &Daemon{opts: o}
	if o.SwarmPort == 0 {
		if d.opts.SwarmPort, err = freePort(o.SwarmIPs); err != nil {
			return nil, &StartError{Err: fmt.Errorf("%w: swarm port: %w", ErrStartFailed, err)}
		}
	}
	p, api, err := d.spawn(startCtx)
	if err != nil {
		return nil, err
	}
	// Restarts keep the ports the backend was given.
	d.opts.APIPort = urlPort(api)
	if o.Gateway {
		d.gateway = o.readGatewayFile()
		d.opts.GatewayPort = urlPort(d.gateway)
	}
	d.client = NewClient(api)
	d.proc = p
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.watch(p)
	o.Logger.Info("ipfs: daemon serving", "pid", p.cmd.Process.Pid, "api", api, "gateway", d.gateway, "swarm_port", d.opts.SwarmPort)
	return d, nil
}

// attach returns a Daemon for a daemon already serving the repository (its
// api file answers with the repository's own peer id), nil when none does.
// A running daemon without the private network this one needs cannot be
// shared, nor replaced while it holds the repository: that is an error.
func attach(ctx context.Context, o Options) (*Daemon, error) {
	api := o.readAPIFile()
	want := o.repoPeerID()
	if api == "" || want == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	c := NewClient(api)
	id, err := c.ID(ctx)
	if err != nil || id.ID.String() != want {
		return nil, nil
	}
	if o.SwarmKey != nil {
		have, _ := os.ReadFile(filepath.Join(o.RepoDir, swarmKeyFile))
		if !bytes.Equal(have, SwarmKeyFile(o.SwarmKey)) {
			return nil, fmt.Errorf("the repository %s is in use by an IPFS node outside this swarm (API %s); stop the other edgellm command first", o.RepoDir, api)
		}
	}
	d := &Daemon{opts: o, client: c, attached: true}
	if o.Gateway {
		d.gateway = o.readGatewayFile()
	}
	return d, nil
}

// Client returns a client of the daemon's API.
func (d *Daemon) Client() *Client { return d.client }

// GatewayURL returns the daemon's gateway address (trustless responses
// only): unix:/path of its socket, or http://127.0.0.1:PORT when
// Options.GatewayPort is set; "" when Options.Gateway is off.
func (d *Daemon) GatewayURL() string { return d.gateway }

// APIURL returns the API's address: unix:/path of its socket, or
// http://127.0.0.1:PORT when Options.APIPort is set.
func (d *Daemon) APIURL() string { return d.client.URL() }

// Attached reports whether the daemon was already running when Start was
// called (this Daemon neither supervises nor stops it).
func (d *Daemon) Attached() bool { return d.attached }

// Pid returns the pid of the running daemon, 0 when none runs or the daemon
// is not this supervisor's.
func (d *Daemon) Pid() int {
	if d.attached {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return 0
	}
	return d.proc.cmd.Process.Pid
}

// Err returns why the daemon is no longer restarted, nil while it is
// supervised.
func (d *Daemon) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fatal
}

// Close stops the daemon (SIGTERM, then SIGKILL after StopTimeout) and its
// supervision. It leaves an attached daemon running. Idempotent.
func (d *Daemon) Close() error {
	if d.attached {
		return nil
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	p := d.proc
	d.mu.Unlock()
	d.cancel()
	var err error
	if p != nil {
		err = p.stop(d.opts.StopTimeout)
	}
	d.wg.Wait()
	d.opts.Logger.Info("ipfs: daemon stopped")
	return err
}

// spawn configures the repository, starts `ipfs daemon` and waits until the
// API answers. It returns the process and the API URL.
func (d *Daemon) spawn(ctx context.Context) (*kuboProc, string, error) {
	o := d.opts
	fail := func(err error, tail []string) (*kuboProc, string, error) {
		return nil, "", &StartError{Err: fmt.Errorf("%w: %w", ErrStartFailed, err), Tail: tail}
	}
	if err := o.initRepo(ctx); err != nil {
		return fail(err, nil)
	}
	if err := o.configure(o.APIPort, o.GatewayPort, o.SwarmPort); err != nil {
		return fail(fmt.Errorf("configure the repository: %w", err), nil)
	}
	if err := o.prepareSockets(o.APIPort, o.GatewayPort); err != nil {
		return fail(fmt.Errorf("sockets: %w", err), nil)
	}
	// A daemon killed with SIGKILL leaves its api and gateway files: never
	// read those.
	for _, name := range []string{apiFile, gatewayFile} {
		if err := os.Remove(filepath.Join(o.RepoDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fail(err, nil)
		}
	}
	p := &kuboProc{tail: newTail(), exited: make(chan struct{})}
	out := io.MultiWriter(p.tail, o.Log)
	// --repo-dir repeats IPFS_PATH on the command line, so the daemon shows
	// up among the processes that mention the node's data directory.
	// --migrate: a repository made by an older pinned Kubo is upgraded, not
	// refused. --enable-gc: blocks the KV store unpins are collected (every
	// Datastore.GCPeriod, 1h, once the repository passes
	// Datastore.StorageGCWatermark of StorageMax, 90% of 10GB by default;
	// both stay as the repository's config says). Everything else is in the
	// repository's config.
	p.cmd = exec.Command(o.Binary, "--repo-dir="+o.RepoDir, "daemon", "--migrate", "--enable-gc")
	p.cmd.Env = o.daemonEnv()
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = sysProcAttr()
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		return fail(err, nil)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	api, err := d.waitReady(ctx, p)
	if err != nil {
		p.stop(time.Second)
		return fail(err, p.tail.Lines())
	}
	return p, api, nil
}

// waitReady polls the api file and then POST /api/v0/id with backoff until
// the API answers, the process exits, or ctx ends.
func (d *Daemon) waitReady(ctx context.Context, p *kuboProc) (string, error) {
	start := time.Now()
	delay := 20 * time.Millisecond
	lastReport := time.Time{}
	defer func() {
		if d.opts.Waiting != nil && !lastReport.IsZero() {
			d.opts.Waiting(0)
		}
	}()
	var lastErr error = errors.New("no api file yet")
	for {
		if api := d.opts.readAPIFile(); api != "" {
			attempt, cancel := context.WithTimeout(ctx, time.Second)
			_, err := NewClient(api).ID(attempt)
			cancel()
			switch {
			case err != nil:
				lastErr = err
			case d.opts.Gateway && d.opts.readGatewayFile() == "":
				lastErr = errors.New("no gateway file yet")
			default:
				return api, nil
			}
		}
		if waited := time.Since(start); d.opts.Waiting != nil && waited > time.Second &&
			time.Since(lastReport) >= 500*time.Millisecond {
			d.opts.Waiting(waited)
			lastReport = time.Now()
		}
		timer := time.NewTimer(delay)
		select {
		case <-p.exited:
			timer.Stop()
			return "", fmt.Errorf("ipfs daemon exited before its API answered: %s", describeExit(p.exitErr))
		case <-ctx.Done():
			timer.Stop()
			return "", fmt.Errorf("API not answering (%v): %w", lastErr, context.Cause(ctx))
		case <-timer.C:
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// watch restarts the daemon whenever it exits, until Close or the restart
// budget is spent.
func (d *Daemon) watch(p *kuboProc) {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-p.exited:
		}
		if !d.setProc(nil, nil) {
			return
		}
		d.opts.Logger.Warn("ipfs: daemon exited; restarting", "pid", p.cmd.Process.Pid,
			"status", describeExit(p.exitErr))
		next, err := d.restart(p)
		if err != nil {
			d.opts.Logger.Error("ipfs: daemon not restarted", "err", err)
			d.setProc(nil, err)
			return
		}
		if d.opts.OnRestart != nil { // before the new daemon is visible, so callers see the count first
			d.opts.OnRestart()
		}
		if !d.setProc(next, nil) {
			next.stop(d.opts.StopTimeout) // closed while starting
			return
		}
		d.opts.Logger.Info("ipfs: daemon restarted", "pid", next.cmd.Process.Pid)
		p = next
	}
}

// restart starts a new daemon, retrying with backoff (the first try at
// once) while the per-minute budget lasts.
func (d *Daemon) restart(dead *kuboProc) (*kuboProc, error) {
	lastErr := fmt.Errorf("%s; last output: %q", describeExit(dead.exitErr), dead.tail.Lines())
	delay := time.Duration(0)
	for {
		if !d.takeRestart(time.Now()) {
			return nil, fmt.Errorf("%w: %d restarts in the last minute; last failure: %w",
				ErrGaveUp, max(d.opts.MaxRestartsPerMinute, 0), lastErr)
		}
		timer := time.NewTimer(delay)
		select {
		case <-d.ctx.Done():
			timer.Stop()
			return nil, errors.New("ipfs: closed")
		case <-timer.C:
		}
		p, err := d.respawn()
		if err == nil {
			return p, nil
		}
		d.opts.Logger.Warn("ipfs: restart failed", "err", err)
		lastErr = err
		delay = min(max(2*delay, 250*time.Millisecond), restartBackoffMax)
	}
}

// respawn is one restart try, under the start lock like the first start.
func (d *Daemon) respawn() (*kuboProc, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.StartTimeout)
	defer cancel()
	unlock, err := lockStart(ctx, d.opts.RepoDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	p, _, err := d.spawn(ctx)
	return p, err
}

// takeRestart records a restart at now when fewer than MaxRestartsPerMinute
// happened in the minute before it.
func (d *Daemon) takeRestart(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	recent := d.restarts[:0]
	for _, t := range d.restarts {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	d.restarts = recent
	if len(recent) >= d.opts.MaxRestartsPerMinute {
		return false
	}
	d.restarts = append(d.restarts, now)
	return true
}

// setProc changes the serving process; false, changing nothing, once closed.
func (d *Daemon) setProc(p *kuboProc, fatal error) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.proc, d.fatal = p, fatal
	return true
}

// stop ends the process: SIGTERM, wait up to grace, SIGKILL. It signals
// only this process, by its pid.
func (p *kuboProc) stop(grace time.Duration) error {
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop ipfs daemon pid %d: %w", pid, err)
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return nil
	case <-timer.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill ipfs daemon pid %d: %w", pid, err)
	}
	<-p.exited
	return nil
}

// describeExit renders a Wait error: "exit status 1", "signal: killed".
func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// newTail keeps the daemon's last output lines for start errors, without the
// blank lines Kubo prints around its warnings.
func newTail() *linetail.Ring {
	t := linetail.New(tailLines)
	t.SkipBlank = true
	return t
}
