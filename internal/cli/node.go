package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/config"
)

// maxBackendLog is the size at which the backend log is rotated to .1.
const maxBackendLog = 10 << 20

// node is what openBackend returns: the backend and what must close with it.
type node struct {
	backend.Backend
	logFile *os.File
}

// Close stops the backend, then closes its log.
func (n *node) Close() error {
	err := n.Backend.Close()
	if n.logFile != nil {
		err = errors.Join(err, n.logFile.Close())
	}
	return err
}

// openBackend starts this machine's backend under a supervisor, or connects
// to the one at node.backend_address. A started backend's output goes to
// <data dir>/logs/backend.log (and to stderr at log level debug). Callers
// must Close it. ctx bounds the start only.
func (app *App) openBackend(ctx context.Context, cfg *config.Config) (*node, error) {
	if addr := cfg.Node.BackendAddress; addr != "" {
		b, err := backend.Dial(addr)
		if err != nil {
			return nil, err
		}
		return &node{Backend: b}, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
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
	)
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%w (python %s; backend log %s)", err, s.Python, logPath)
	}
	return &node{Backend: sup, logFile: logFile}, nil
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
		return nil, fmt.Errorf("backend log: %w", err)
	}
	return f, nil
}
