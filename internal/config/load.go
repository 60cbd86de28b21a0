package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Option adjusts how Load finds and layers the configuration.
type Option func(*loader) error

type loader struct {
	file      string
	dataDir   string
	lookupEnv func(string) (string, bool)
	exe       func() (string, error)
	overrides []func(*Config)
}

// WithFile loads this config file (the --config flag); it must exist.
// Default: $EDGELLM_CONFIG, else <data dir>/edgellm.yaml when it exists.
func WithFile(path string) Option {
	return func(l *loader) error {
		l.file = path
		return nil
	}
}

// WithDataDir sets the data directory (the --data-dir flag), overriding the
// environment. Default: see Config.DataDir.
func WithDataDir(dir string) Option {
	return func(l *loader) error {
		l.dataDir = dir
		return nil
	}
}

// WithLookupEnv replaces the environment, for tests. Default os.LookupEnv.
func WithLookupEnv(lookup func(string) (string, bool)) Option {
	return func(l *loader) error {
		if lookup == nil {
			return fmt.Errorf("%w: nil environment lookup", ErrInvalid)
		}
		l.lookupEnv = lookup
		return nil
	}
}

// WithExecutable replaces the lookup of the running binary's path, which
// locates the repository's .venv. Default os.Executable.
func WithExecutable(exe func() (string, error)) Option {
	return func(l *loader) error {
		l.exe = exe
		return nil
	}
}

// WithOverride applies fn after the file and the environment: the place for
// flags. Several overrides apply in order. Default none.
func WithOverride(fn func(*Config)) Option {
	return func(l *loader) error {
		l.overrides = append(l.overrides, fn)
		return nil
	}
}

// Load builds the configuration: defaults, then the file, then the
// environment, then the overrides; fills the fallbacks and validates.
func Load(opts ...Option) (*Config, error) {
	l := &loader{lookupEnv: os.LookupEnv, exe: os.Executable}
	for _, opt := range opts {
		if err := opt(l); err != nil {
			return nil, err
		}
	}
	cfg := Default()
	var err error
	if cfg.DataDir, err = l.resolveDataDir(); err != nil {
		return nil, err
	}
	if cfg.File, err = l.resolveFile(cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.File != "" {
		if err := decodeFile(cfg.File, cfg); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(cfg, l.lookupEnv); err != nil {
		return nil, err
	}
	for _, fn := range l.overrides {
		fn(cfg)
	}
	if cfg.Node.Supervisor.Python == "" {
		cfg.Node.Supervisor.Python = defaultPython(l.exe)
	}
	if cfg.IPFS.Binary == "" && cfg.IPFS.Enabled && cfg.IPFS.API == "" {
		cfg.IPFS.Binary = defaultIPFS(l.exe)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (l *loader) resolveDataDir() (string, error) {
	dir := l.dataDir
	if dir == "" {
		dir = DefaultDataDir(l.lookupEnv)
	}
	if dir == "" {
		return "", fmt.Errorf("%w: no data directory: set --data-dir, EDGELLM_DATA_DIR or HOME", ErrInvalid)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: data directory %q: %w", ErrInvalid, dir, err)
	}
	return abs, nil
}

// DefaultDataDir returns $EDGELLM_DATA_DIR, else $XDG_DATA_HOME/edgellm, else
// $HOME/.local/share/edgellm; "" when none is set.
func DefaultDataDir(lookupEnv func(string) (string, bool)) string {
	if v, ok := lookupEnv(EnvDataDir); ok && v != "" {
		return v
	}
	if v, ok := lookupEnv("XDG_DATA_HOME"); ok && v != "" {
		return filepath.Join(v, "edgellm")
	}
	if v, ok := lookupEnv("HOME"); ok && v != "" {
		return filepath.Join(v, ".local", "share", "edgellm")
	}
	return ""
}

func (l *loader) resolveFile(dataDir string) (string, error) {
	file := l.file
	if file == "" {
		if v, ok := l.lookupEnv(EnvConfig); ok {
			file = v
		}
	}
	if file != "" {
		abs, err := filepath.Abs(file)
		if err != nil {
			return "", fmt.Errorf("%w %q: %w", ErrFile, file, err)
		}
		return abs, nil
	}
	def := filepath.Join(dataDir, FileName)
	if _, err := os.Stat(def); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrFile, def, err)
	}
	return def, nil
}

func decodeFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFile, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w %s: %w", ErrFile, path, err)
	}
	return nil
}

// defaultPython finds the backend's interpreter when none is configured: the
// repository's venv next to the binary (bin/edgellm → .venv/bin/python), else
// python3 on PATH, else plain "python3" so that starting fails with a clear
// error.
func defaultPython(exe func() (string, error)) string {
	if self, err := exe(); err == nil {
		venv := filepath.Join(filepath.Dir(self), "..", ".venv", "bin", "python")
		if fi, err := os.Stat(venv); err == nil && !fi.IsDir() {
			return filepath.Clean(venv)
		}
	}
	if p, err := exec.LookPath("python3"); err == nil {
		return p
	}
	return "python3"
}

// defaultIPFS finds Kubo when none is configured: the pinned build next to
// the binary (bin/edgellm → .bin/ipfs, what `make setup` builds), else ipfs
// on PATH, else "" (the node then runs without an IPFS node and says so).
// The pinned build comes first because it is the version edgellm is tested
// with; a container puts its own pinned build on PATH.
func defaultIPFS(exe func() (string, error)) string {
	if self, err := exe(); err == nil {
		pinned := filepath.Join(filepath.Dir(self), "..", ".bin", "ipfs")
		if fi, err := os.Stat(pinned); err == nil && !fi.IsDir() {
			return filepath.Clean(pinned)
		}
	}
	if p, err := exec.LookPath("ipfs"); err == nil {
		return p
	}
	return ""
}
