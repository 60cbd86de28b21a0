package backend

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"
)

// settings is the Supervisor's configuration, built from Options.
type settings struct {
	python       string
	dataDir      string
	modelsDir    string
	configFile   string
	device       string
	engine       string
	listen       string
	tmpDir       string
	startTimeout time.Duration
	stopTimeout  time.Duration
	maxRestarts  int
	stderrLines  int
	stderr       io.Writer
	env          []string
	logger       *slog.Logger
	onRestart    func()
}

// Option configures a Supervisor.
type Option func(*settings) error

// WithPython sets the interpreter that runs `-m edgellm.server`. Required.
func WithPython(path string) Option {
	return func(c *settings) error { c.python = path; return nil }
}

// WithDataDir sets the backend's --data-dir, where the socket goes too.
// Required.
func WithDataDir(dir string) Option {
	return func(c *settings) error { c.dataDir = dir; return nil }
}

// WithModelsDir passes --models-dir. Default "": the backend's own default.
func WithModelsDir(dir string) Option {
	return func(c *settings) error { c.modelsDir = dir; return nil }
}

// WithConfigFile passes --config, so the backend reads its backend: section.
// Default "": none.
func WithConfigFile(path string) Option {
	return func(c *settings) error { c.configFile = path; return nil }
}

// WithDevice passes --device (auto, cpu or cuda). Default "": the backend's
// own setting.
func WithDevice(device string) Option {
	return func(c *settings) error { c.device = device; return nil }
}

// WithEngine passes --engine (torch or vllm). Default "": the backend's own
// setting.
func WithEngine(engine string) Option {
	return func(c *settings) error { c.engine = engine; return nil }
}

// WithListen sets the backend's address, unix:/abs/path.sock or
// 127.0.0.1:PORT. Default "": a unix socket unique to this supervisor in
// <data dir>/run, or in the temp directory when that path exceeds the
// 107-byte sun_path limit.
func WithListen(addr string) Option {
	return func(c *settings) error { c.listen = addr; return nil }
}

// WithStartTimeout bounds each start, until the backend reports SERVING.
// Default 2m.
func WithStartTimeout(d time.Duration) Option {
	return func(c *settings) error {
		if d <= 0 {
			return fmt.Errorf("%w: start timeout %v", ErrInvalidOption, d)
		}
		c.startTimeout = d
		return nil
	}
}

// WithStopTimeout sets how long the backend gets after SIGTERM before
// SIGKILL. Default 30s: longer than the
// backend's own worst-case stop (5s of gRPC grace, then its Ray nodes in
// parallel: 5s SIGTERM grace + 3s after SIGKILL + 5s reaping the launcher;
// backend/edgellm/cluster/procs.py), so a stop is never cut short.
func WithStopTimeout(d time.Duration) Option {
	return func(c *settings) error {
		if d <= 0 {
			return fmt.Errorf("%w: stop timeout %v", ErrInvalidOption, d)
		}
		c.stopTimeout = d
		return nil
	}
}

// WithMaxRestartsPerMinute bounds restarts of a backend that keeps dying; 0
// disables restarts. Default 5.
func WithMaxRestartsPerMinute(n int) Option {
	return func(c *settings) error {
		if n < 0 {
			return fmt.Errorf("%w: max restarts %d", ErrInvalidOption, n)
		}
		c.maxRestarts = n
		return nil
	}
}

// WithStderrLines sets how many lines of the backend's stderr a StartError
// carries. Default 40.
func WithStderrLines(n int) Option {
	return func(c *settings) error {
		if n < 1 {
			return fmt.Errorf("%w: stderr lines %d", ErrInvalidOption, n)
		}
		c.stderrLines = n
		return nil
	}
}

// WithStderr copies the backend's stdout and stderr to w (a log file, or the
// terminal when debugging). Default: kept only in the tail buffer.
func WithStderr(w io.Writer) Option {
	return func(c *settings) error { c.stderr = w; return nil }
}

// WithEnv adds KEY=VALUE entries to the backend's environment, which is
// otherwise the node's. Default none.
func WithEnv(kv ...string) Option {
	return func(c *settings) error { c.env = append(c.env, kv...); return nil }
}

// WithLogger sets where the supervisor logs restarts and stops. Default: no
// logging.
func WithLogger(l *slog.Logger) Option {
	return func(c *settings) error { c.logger = l; return nil }
}

// WithOnRestart calls f after each restart of a backend that died (serve
// counts them in its metrics). Default: none.
func WithOnRestart(f func()) Option {
	return func(c *settings) error { c.onRestart = f; return nil }
}

func newConfig(opts []Option) (*settings, error) {
	c := &settings{
		tmpDir:       os.TempDir(),
		startTimeout: 2 * time.Minute,
		stopTimeout:  30 * time.Second,
		maxRestarts:  5,
		stderrLines:  40,
		stderr:       io.Discard,
		logger:       slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		if err := opt(c); err != nil {
			return nil, err
		}
	}
	switch {
	case c.python == "":
		return nil, fmt.Errorf("%w: no python interpreter", ErrInvalidOption)
	case c.dataDir == "":
		return nil, fmt.Errorf("%w: no data directory", ErrInvalidOption)
	case c.stderr == nil || c.logger == nil:
		return nil, fmt.Errorf("%w: nil stderr writer or logger", ErrInvalidOption)
	}
	return c, nil
}
