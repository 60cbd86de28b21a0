package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/term"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/linetail"
	"github.com/edgellm/edgellm/p2p"
)

// maxBackendLog is the size at which the backend and IPFS logs are rotated
// to .1.
const maxBackendLog = 10 << 20

// node is what openBackend returns: the backend and what must close with it,
// including the IPFS node (Kubo) the backend stores KV blocks in.
type node struct {
	backend.Backend
	logFile *os.File
	ipfs    *ipfs.Daemon // the Kubo daemon this node runs; nil when none
	ipfsAPI *ipfs.Client // the Kubo the backend was given; nil when none
	ipfsLog *os.File
}

// IPFS returns a client of the IPFS node the backend uses, nil when there is
// none (disabled, or it did not start: the KV cache is then off).
func (n *node) IPFS() *ipfs.Client { return n.ipfsAPI }

// Close stops the backend, then the IPFS node, then closes their logs.
func (n *node) Close() error {
	err := n.Backend.Close()
	if n.ipfs != nil {
		err = errors.Join(err, n.ipfs.Close())
	}
	for _, f := range []*os.File{n.logFile, n.ipfsLog} {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	return err
}

// openSettings are openBackend's options.
type openSettings struct {
	swarmKey []byte
	listen   []ma.Multiaddr
}

// openOption changes how openBackend sets the node up.
type openOption func(*openSettings)

// inSwarm makes the node's IPFS node a member of the swarm's private IPFS
// network (its swarm.key is derived from the swarm secret), listening on the
// IPs of the node's own listen addresses (listen; nil: every interface).
// Without it the IPFS node listens on 127.0.0.1 only and reaches no one.
func inSwarm(secret p2p.Secret, listen []ma.Multiaddr) openOption {
	return func(s *openSettings) {
		s.swarmKey = ipfs.DeriveSwarmKey(secret[:])
		s.listen = listen
	}
}

// openBackend starts this machine's backend under a supervisor, or connects
// to the one at node.backend_address. Before a started backend it starts the
// IPFS node (ipfs: section) and hands the backend its API in
// EDGELLM_IPFS_API; an IPFS node that cannot start costs a warning and the
// KV cache, never the command. A started backend's output goes to
// <data dir>/logs/backend.log, Kubo's to logs/ipfs.log (both also to stderr
// at log level debug). Callers must Close it. ctx bounds the start only.
func (app *App) openBackend(ctx context.Context, cfg *config.Config, opts ...openOption) (*node, error) {
	var set openSettings
	for _, o := range opts {
		o(&set)
	}
	if addr := cfg.Node.BackendAddress; addr != "" {
		b, err := backend.Dial(addr)
		if err != nil {
			return nil, err
		}
		n := &node{Backend: b}
		if cfg.IPFS.Enabled && cfg.IPFS.API != "" {
			n.ipfsAPI = ipfs.NewClient(cfg.IPFS.API)
		}
		return n, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	n := &node{}
	ok := false
	defer func() {
		if !ok {
			n.closeIPFS()
		}
	}()
	app.startIPFS(ctx, cfg, &set, n)
	// Set and empty: the backend's KV cache is off / it reads blocks through
	// the RPC API (an external Kubo's gateway is not known).
	ipfsEnv := []string{"EDGELLM_IPFS_API=", "EDGELLM_IPFS_GATEWAY="}
	if n.ipfsAPI != nil {
		ipfsEnv[0] += n.ipfsAPI.URL()
	}
	if n.ipfs != nil {
		ipfsEnv[1] += n.ipfs.GatewayURL()
	}
	logPath := filepath.Join(cfg.DataDir, "logs", "backend.log")
	logFile, err := openLog(logPath)
	if err != nil {
		return nil, err
	}
	var out io.Writer = logFile
	if cfg.Node.LogLevel == "debug" {
		out = io.MultiWriter(logFile, app.stderr)
	}
	s := cfg.Node.Supervisor
	sup, err := backend.Start(ctx,
		backend.WithPython(s.Python),
		backend.WithDataDir(cfg.DataDir),
		backend.WithModelsDir(cfg.Node.ModelsDir),
		backend.WithConfigFile(cfg.File),
		backend.WithDevice(cfg.Node.Device),
		backend.WithListen(s.Listen),
		backend.WithStartTimeout(s.StartTimeout),
		backend.WithStopTimeout(s.StopTimeout),
		backend.WithMaxRestartsPerMinute(s.MaxRestartsPerMinute),
		backend.WithStderr(out),
		backend.WithLogger(app.log),
		backend.WithEnv(ipfsEnv...),
	)
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%w (python %s; backend log %s)", err, s.Python, logPath)
	}
	n.Backend, n.logFile, ok = sup, logFile, true
	return n, nil
}

// startIPFS starts (or finds) the IPFS node for n as cfg.IPFS and set say.
// On failure it prints one warning line and leaves n without one.
func (app *App) startIPFS(ctx context.Context, cfg *config.Config, set *openSettings, n *node) {
	c := cfg.IPFS
	switch {
	case !c.Enabled:
		return
	case c.API != "":
		n.ipfsAPI = ipfs.NewClient(c.API)
		return
	case c.Binary == "":
		app.warnNoIPFS("no Kubo binary: set ipfs.binary or " + config.EnvIPFSBin + ", or run `make setup`")
		return
	}
	logPath := filepath.Join(cfg.DataDir, "logs", "ipfs.log")
	logFile, err := openLog(logPath)
	if err != nil {
		app.warnNoIPFS(err.Error())
		return
	}
	var out io.Writer = logFile
	if cfg.Node.LogLevel == "debug" {
		out = io.MultiWriter(logFile, app.stderr)
	}
	opts := ipfs.Options{
		Binary: c.Binary, RepoDir: filepath.Join(cfg.DataDir, "ipfs"), APIPort: c.APIPort,
		Gateway: c.Gateway, SwarmKey: set.swarmKey, SwarmPort: c.SwarmPort,
		Log: out, Logger: app.log, Waiting: app.ipfsWaitLine(),
	}
	if set.swarmKey != nil {
		opts.SwarmIPs = ipfs.SwarmIPsOf(set.listen)
	}
	d, err := ipfs.Start(ctx, opts)
	if err != nil {
		logFile.Close()
		if ctx.Err() != nil {
			return // interrupted: the command is ending anyway
		}
		why := err.Error()
		var se *ipfs.StartError
		if errors.As(err, &se) { // the whole output is in the log; its last line says most
			why = strings.TrimPrefix(se.Err.Error(), ipfs.ErrStartFailed.Error()+": ")
			if len(se.Tail) > 0 {
				why += ": " + se.Tail[len(se.Tail)-1]
			}
		}
		app.warnNoIPFS(fmt.Sprintf("%s; log %s", why, logPath))
		return
	}
	n.ipfs, n.ipfsAPI, n.ipfsLog = d, d.Client(), logFile
}

// closeIPFS stops the IPFS node of a node whose backend did not start.
func (n *node) closeIPFS() {
	if n.ipfs != nil {
		n.ipfs.Close()
	}
	if n.ipfsLog != nil {
		n.ipfsLog.Close()
	}
}

// warnNoIPFS prints the one line that says the node runs without IPFS.
func (app *App) warnNoIPFS(why string) {
	fmt.Fprintf(app.stderr, "edgellm: warning: IPFS node not started (%s); the KV cache is off\n", linetail.OneLine(why))
}

// ipfsWaitLine returns a status line for a slow IPFS start on a terminal,
// nil when stderr is not one.
func (app *App) ipfsWaitLine() func(time.Duration) {
	f, ok := app.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(elapsed time.Duration) {
		if elapsed == 0 {
			fmt.Fprint(f, "\r\x1b[K")
			return
		}
		fmt.Fprintf(f, "\r\x1b[Kstarting the IPFS node… %ds", int(elapsed.Seconds()))
	}
}

// openLog opens the backend log for appending, rotating it when large.
func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("log directory: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxBackendLog {
		_ = os.Rename(path, path+".1") // best effort: appending works either way
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", path, err)
	}
	return f, nil
}
