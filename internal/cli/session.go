package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// Sessions (issue 4): `session open` keeps a cluster for further requests,
// `infer --session ID` uses it, `session close ID` ends it, and a session
// closes itself after its idle timeout. The daemon is in session_daemon.go,
// the files in session_files.go.
//
// Decisions:
//   - open starts the daemon as a detached process (the same binary, its
//     own session and process group, stdin /dev/null, output to the
//     session's log), passing the swarm and planning flags through as given,
//     and waits for its record. Ctrl-C while waiting stops the daemon (which
//     tears down whatever it had formed) and exits 130.
//   - If the daemon exits before it is ready, open exits with the daemon's
//     own exit code (2 bad plan, 3 unknown model, 4 unavailable, ...) and
//     the daemon's last log line as its one-line reason.
//   - close signals the daemon (SIGTERM, only after checking the pid is
//     that session's daemon) and waits for it to finish tearing down, so
//     when close returns no Ray process of the session is left.

const (
	// openWait bounds how long open waits for the daemon to form the
	// cluster (discovery, Ray head, joins) before stopping it.
	openWait = 10 * time.Minute
	// closeWait bounds how long close waits for the daemon to tear down: a
	// minute for the Ray head's stop (requester's bound) plus a margin.
	closeWait = 90 * time.Second
	// pollEvery is how often open and close look at the daemon.
	pollEvery = 100 * time.Millisecond
)

const sessionLong = `A session keeps a cluster across the swarm's workers for further requests, so
they skip discovery, planning and the Ray start that a one-shot infer pays
every time.

  edgellm session open [--model ID] [--stages N] [--idle-timeout 10m]
      forms the cluster in a background daemon and prints the session id
  edgellm infer --session ID "..."
      runs a prompt on it (streams as usual; --json adds stages)
  edgellm session list [--json]
  edgellm session close ID
      has the workers leave and stops the Ray head

A session closes itself after --idle-timeout with no request. Its files are in
<data-dir>/sessions: ID.json (pid, socket, model, stages), ID.sock, ID.log.`

func newSessionCommand(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Keep a cluster for several requests: open, list, close",
		Long:  sessionLong,
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("%w: session needs a subcommand: open, list or close (see edgellm session --help)", ErrUsage)
		},
	}
	cmd.AddCommand(newSessionOpenCommand(app), newSessionCloseCommand(app), newSessionListCommand(app),
		newSessionServeCommand(app))
	return cmd
}

// sessionOpenOptions are open's flags: the daemon's, plus --json.
type sessionOpenOptions struct {
	serve sessionServeOptions
	json  bool
}

func newSessionOpenCommand(app *App) *cobra.Command {
	o := &sessionOpenOptions{}
	cmd := &cobra.Command{
		Use:   "open [flags]",
		Short: "Form a cluster across the swarm and keep it; prints the session id",
		Long: `Form a cluster across the swarm's workers (as infer does: discover, plan,
Ray head, workers join) and keep it in a background daemon for further
requests (edgellm infer --session ID). Prints the session id alone on stdout
and one line per stage on stderr; --json prints {session_id, model, stages}.
The session closes after --idle-timeout with no request, or with edgellm
session close ID. A plan that cannot be made exits 2, an unknown model 3,
busy or unreachable workers 4.`,
		Example: `  id=$(edgellm session open --stages 2)
  edgellm infer --session "$id" "What is the capital of France?"
  edgellm session close "$id"`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return app.openSession(cmd, o) },
	}
	o.serve.register(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print {session_id, model, stages} as JSON")
	return cmd
}

// daemonFlagsSkipped are open's flags the daemon does not get as given:
// the global ones are passed explicitly, --json is open's own, and the join
// string goes through the daemon's environment (daemonEnv).
var daemonFlagsSkipped = map[string]bool{"data-dir": true, "config": true, "log-level": true, "json": true, "help": true,
	"join": true, "join-file": true}

// daemonEnv is the daemon's environment: this one plus EDGELLM_JOIN with
// the join string open resolved. The secret never goes in the daemon's
// arguments, which every local user reads in /proc/<pid>/cmdline for the
// daemon's whole life; /proc/<pid>/environ is readable by this user only,
// and the daemon drops the variable once read (swarmFlags.load), so its
// backend and Ray processes do not inherit it.
func daemonEnv(join string) []string {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, joinEnv+"=") {
			env = append(env, kv)
		}
	}
	return append(env, joinEnv+"="+join)
}

// openSession starts the daemon and waits until its cluster is ready.
func (app *App) openSession(cmd *cobra.Command, o *sessionOpenOptions) error {
	if err := o.serve.validate(); err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	if _, err := o.serve.dist.swarm.resolve(cfg, app.stdin); err != nil {
		return err // no swarm, or a malformed join string: fail before starting anything
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locate the edgellm binary: %w", err)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	id := newSessionID()
	paths := newSessionPaths(dataDir, id)
	if err := paths.mkdir(); err != nil {
		return err
	}
	args := []string{"--data-dir", dataDir}
	if app.flags.configFile != "" {
		file, err := filepath.Abs(app.flags.configFile)
		if err != nil {
			return err
		}
		args = append(args, "--config", file)
	}
	if cmd.Flags().Changed("log-level") {
		args = append(args, "--log-level", app.flags.logLevel)
	}
	args = append(args, "session", "serve", "--id", id)
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if daemonFlagsSkipped[f.Name] {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				args = append(args, "--"+f.Name+"="+v)
			}
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	})

	logFile, err := os.OpenFile(paths.log(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("session log: %w", err)
	}
	daemon := exec.Command(exe, args...)
	daemon.Env = daemonEnv(o.serve.dist.swarm.join)
	daemon.Stdout, daemon.Stderr = logFile, logFile
	daemon.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // survives this command and the terminal
	err = daemon.Start()
	logFile.Close()
	if err != nil {
		return fmt.Errorf("start the session daemon: %w", err)
	}
	app.log.Info("session daemon started", "session", id, "pid", daemon.Process.Pid, "log", paths.log())
	exited := make(chan error, 1)
	go func() { exited <- daemon.Wait() }()

	info, err := app.waitReady(paths, daemon, exited)
	if err != nil {
		return err
	}
	if o.json {
		return writeJSON(app.stdout, map[string]any{"session_id": id, "model": info.Model, "stages": info.Stages})
	}
	for i, s := range info.Stages {
		fmt.Fprintf(app.stderr, "stage %d/%d: layers [%d,%d) on %s (ray %s)\n", i+1, len(info.Stages),
			s.LayerStart, s.LayerEnd, s.PeerID, s.RayAddress)
	}
	_, err = fmt.Fprintln(app.stdout, id)
	return err
}

// waitReady waits for the daemon's record, its exit, Ctrl-C or openWait,
// drawing a status line on a terminal.
func (app *App) waitReady(paths sessionPaths, daemon *exec.Cmd, exited chan error) (*sessionInfo, error) {
	line := newStatusLine(app.stderr)
	defer line.clear()
	start := time.Now()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if info, err := paths.readInfo(); err == nil {
			return info, nil
		}
		line.draw(fmt.Sprintf("forming the cluster… %ds", int(time.Since(start).Seconds())))
		select {
		case err := <-exited:
			if info, rerr := paths.readInfo(); rerr == nil && isSessionDaemon(info.PID, paths.id) {
				return info, nil // impossible in practice: it exits only after removing the record
			}
			return nil, daemonFailure(paths, err)
		case <-app.interrupt.Done():
			line.clear()
			stopDaemon(daemon, exited)
			return nil, fmt.Errorf("%w: while forming the session's cluster", ErrInterrupted)
		case <-tick.C:
			if time.Since(start) > openWait {
				stopDaemon(daemon, exited)
				return nil, fmt.Errorf("%w: the cluster was not formed within %s (log %s)", ErrUnavailable, openWait, paths.log())
			}
		}
	}
}

// stopDaemon sends SIGTERM to a daemon that is not ready and waits for it
// to tear down (SIGKILL only past closeWait).
func stopDaemon(daemon *exec.Cmd, exited chan error) {
	_ = daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(closeWait):
		_ = daemon.Process.Kill()
		<-exited
	}
}

// daemonFailure is the error for a daemon that exited before it was
// ready: its exit code and the last line of its log.
func daemonFailure(paths sessionPaths, waitErr error) error {
	msg := lastLogLine(paths.log())
	if msg == "" {
		msg = fmt.Sprintf("the session daemon exited: %v", waitErr)
	}
	msg = strings.TrimPrefix(msg, "edgellm: ")
	code := ExitFailure
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	return &exitCodeError{code: code, msg: msg + " (session log " + paths.log() + ")"}
}

// lastLogLine is the last non-empty line of a file, "" if none.
func lastLogLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		_, _ = f.Seek(-64<<10, io.SeekEnd)
	}
	last := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}

// exitCodeError carries another edgellm process's exit code and message;
// ExitCode maps it back to the same code.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

func (e *exitCodeError) Is(target error) bool {
	switch e.code {
	case ExitUsage:
		return target == ErrUsage
	case ExitNotFound:
		return target == ErrNotFound
	case ExitUnavailable:
		return target == ErrUnavailable
	case ExitInterrupted:
		return target == ErrInterrupted
	}
	return false
}

// statusLine is one redrawn line on a terminal, nothing otherwise.
type statusLine struct {
	w     io.Writer
	tty   bool
	drawn bool
	last  string
}

func newStatusLine(w io.Writer) *statusLine {
	f, ok := w.(*os.File)
	return &statusLine{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (l *statusLine) draw(s string) {
	if !l.tty || s == l.last {
		return
	}
	l.last, l.drawn = s, true
	fmt.Fprintf(l.w, "\r\x1b[K%s", s)
}

func (l *statusLine) clear() {
	if l.drawn {
		fmt.Fprint(l.w, "\r\x1b[K")
		l.drawn, l.last = false, ""
	}
}

func newSessionCloseCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "close ID",
		Short: "Close a session: its workers leave, its Ray head stops",
		Long: `Close a session: the daemon has every worker leave the cluster, stops the Ray
head and its backend, and removes the session's files; close waits until it
has. An unknown or already ended session exits 3.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error { return app.closeSession(cmd, args[0]) },
	}
}

func (app *App) closeSession(cmd *cobra.Command, id string) error {
	if err := checkSessionArg(id); err != nil {
		return err
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	info, err := liveSession(cfg.DataDir, id)
	if err != nil {
		return err
	}
	if err := syscall.Kill(info.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal the session daemon (pid %d): %w", info.PID, err)
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	deadline := time.Now().Add(closeWait)
	for isSessionDaemon(info.PID, id) {
		select {
		case <-app.interrupt.Done():
			return fmt.Errorf("%w: session %s is still closing (pid %d)", ErrInterrupted, id, info.PID)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session %s: its daemon (pid %d) did not finish closing within %s (log %s)",
				id, info.PID, closeWait, newSessionPaths(cfg.DataDir, id).log())
		}
	}
	newSessionPaths(cfg.DataDir, id).removeFiles(info.Socket, false) // if it could not
	fmt.Fprintf(app.stderr, "closed session %s\n", id)
	return nil
}

func newSessionListCommand(app *App) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List this data directory's open sessions",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := app.config(cmd)
			if err != nil {
				return err
			}
			list, err := listSessions(cfg.DataDir)
			if err != nil {
				return err
			}
			if jsonOut {
				if list == nil {
					list = []*sessionInfo{}
				}
				return writeJSON(app.stdout, list)
			}
			tw := tabwriter.NewWriter(app.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tMODEL\tSTAGES\tPID\tCREATED\tIDLE TIMEOUT")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", s.ID, s.Model, len(s.Stages), s.PID,
					s.Created.Local().Format(time.DateTime), s.IdleTimeout)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print a JSON array of sessions (session_id, pid, socket, model, stages, ...)")
	return cmd
}
