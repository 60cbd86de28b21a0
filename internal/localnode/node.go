// Package localnode runs this machine's node processes: the Python backend
// under its supervisor and the IPFS node (Kubo) the backend keeps KV blocks
// in, each with its log, or connects to a backend already running at
// node.backend_address. Every command that computes (infer, models,
// version, worker, a session daemon) opens one; the requester and worker
// runtimes are given it.
//
// Decisions:
//   - The IPFS node starts before the backend, which gets its API in
//     EDGELLM_IPFS_API and its loopback gateway in EDGELLM_IPFS_GATEWAY
//     (both set, empty when there is none). An IPFS node that cannot start
//     costs one warning and the KV cache, never the node.
//   - A started backend writes to <data dir>/logs/backend.log, Kubo to
//     logs/ipfs.log, each rotated to .1 past 10 MiB; WithEcho copies both
//     elsewhere too (the CLI's stderr at log level debug).
//   - A dialled backend (node.backend_address) gets no IPFS node from us: an
//     external one is used when ipfs.api names it.
//   - No terminal, flag or exit code knowledge here: warnings and the slow
//     start's status go to the caller's callbacks.
package localnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/ipfs"
)

// Node is this machine's backend and IPFS node. It implements
// backend.Backend; Close stops what Open started.
type Node struct {
	backend.Backend
	sup        *backend.Supervisor // the backend this node started; nil when dialled
	backendLog *rotatingLog
	ipfs       *ipfs.Daemon // the Kubo daemon this node runs; nil when none
	ipfsAPI    *ipfs.Client // the Kubo the backend was given; nil when none
	ipfsLog    *rotatingLog
}

var _ backend.Backend = (*Node)(nil)

// Running reports, without waiting, whether the backend this node started
// serves now (false while it restarts). A dialled backend is another
// process's to supervise: true, and its calls say when it is gone.
func (n *Node) Running() bool { return n.sup == nil || n.sup.Running() }

// Open starts this machine's backend under a supervisor, after its IPFS node
// (cfg.IPFS), or connects to the backend at cfg.Node.BackendAddress. ctx
// bounds the start only; the node runs until Close. A backend that fails to
// start is a *backend.StartError (errors.Is backend.ErrStartFailed) wrapped
// with the Python binary and the log's path.
func Open(ctx context.Context, cfg *config.Config, opts ...Option) (*Node, error) {
	set := settings{warn: func(string) {}}
	for _, o := range opts {
		o(&set)
	}
	if addr := cfg.Node.BackendAddress; addr != "" {
		return dial(addr, cfg)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	n := &Node{}
	if err := n.startIPFS(ctx, cfg, &set); err != nil {
		set.warn(fmt.Sprintf("IPFS node not started (%s); the KV cache is off", err))
	}
	if err := n.startBackend(ctx, cfg, &set); err != nil {
		n.closeIPFS()
		return nil, err
	}
	return n, nil
}

// dial connects to a running backend; its IPFS node is cfg's external one.
func dial(addr string, cfg *config.Config) (*Node, error) {
	b, err := backend.Dial(addr)
	if err != nil {
		return nil, err
	}
	n := &Node{Backend: b}
	if cfg.IPFS.Enabled && cfg.IPFS.API != "" {
		n.ipfsAPI = ipfs.NewClient(cfg.IPFS.API)
	}
	return n, nil
}

// startBackend starts the backend under its supervisor, handing it the IPFS
// node n has (if any).
func (n *Node) startBackend(ctx context.Context, cfg *config.Config, set *settings) error {
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
		return err
	}
	s := cfg.Node.Supervisor
	sup, err := backend.Start(ctx,
		backend.WithPython(s.Python),
		backend.WithDataDir(cfg.DataDir),
		backend.WithModelsDir(cfg.Node.ModelsDir),
		backend.WithConfigFile(cfg.File),
		backend.WithDevice(cfg.Node.Device),
		backend.WithEngine(cfg.Node.Engine),
		backend.WithListen(s.Listen),
		backend.WithStartTimeout(s.StartTimeout),
		backend.WithStopTimeout(s.StopTimeout),
		backend.WithMaxRestartsPerMinute(s.MaxRestartsPerMinute),
		backend.WithStderr(set.output(logFile)),
		backend.WithLogger(set.logger()),
		backend.WithEnv(ipfsEnv...),
		backend.WithOnRestart(set.onBackendRestart),
	)
	if err != nil {
		logFile.Close()
		return fmt.Errorf("%w (python %s; backend log %s)", err, s.Python, logPath)
	}
	n.Backend, n.sup, n.backendLog = sup, sup, logFile
	return nil
}

// IPFS returns a client of the IPFS node the backend uses, nil when there is
// none (disabled, or it did not start: the KV cache is then off).
func (n *Node) IPFS() *ipfs.Client { return n.ipfsAPI }

// Close stops the backend, then the IPFS node, then closes their logs.
func (n *Node) Close() error {
	err := n.Backend.Close()
	if n.ipfs != nil {
		err = errors.Join(err, n.ipfs.Close())
	}
	for _, f := range []*rotatingLog{n.backendLog, n.ipfsLog} {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	return err
}
