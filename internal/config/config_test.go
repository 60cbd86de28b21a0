package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func noExe() (string, error) { return "", errors.New("no executable") }

func writeFile(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPrecedence(t *testing.T) {
	const file = `
node:
  log_level: info
  model: from-file
  models_dir: /file/models
  supervisor:
    python: /file/python
    stop_timeout: 3s
backend:
  device: cpu
`
	tests := []struct {
		name      string
		file      string
		env       map[string]string
		flag      func(*Config)
		wantLevel string
		wantModel string
		wantPy    string
		wantStop  time.Duration
	}{
		{"defaults", "", nil, nil, "warn", DefaultModel, "", 30 * time.Second},
		{"file over defaults", file, nil, nil, "info", "from-file", "/file/python", 3 * time.Second},
		{
			"env over file", file,
			map[string]string{EnvLogLevel: "error", EnvModel: "from-env", EnvPython: "/env/python"},
			nil, "error", "from-env", "/env/python", 3 * time.Second,
		},
		{"empty env is unset", file, map[string]string{EnvModel: ""}, nil, "info", "from-file", "/file/python", 3 * time.Second},
		{
			"flags over env", file,
			map[string]string{EnvLogLevel: "error", EnvModel: "from-env"},
			func(c *Config) { c.Node.LogLevel = "debug"; c.Node.Model = "from-flag" },
			"debug", "from-flag", "/file/python", 3 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				writeFile(t, dir, tt.file)
			}
			opts := []Option{WithDataDir(dir), WithLookupEnv(envMap(tt.env)), WithExecutable(noExe)}
			if tt.flag != nil {
				opts = append(opts, WithOverride(tt.flag))
			}
			cfg, err := Load(opts...)
			if err != nil {
				t.Fatal(err)
			}
			n := cfg.Node
			if n.LogLevel != tt.wantLevel || n.Model != tt.wantModel || n.Supervisor.StopTimeout != tt.wantStop {
				t.Errorf("got level=%q model=%q stop=%v, want %q %q %v",
					n.LogLevel, n.Model, n.Supervisor.StopTimeout, tt.wantLevel, tt.wantModel, tt.wantStop)
			}
			if tt.wantPy != "" && n.Supervisor.Python != tt.wantPy {
				t.Errorf("python = %q, want %q", n.Supervisor.Python, tt.wantPy)
			}
			if (tt.file != "") != (cfg.File != "") {
				t.Errorf("File = %q, file given: %v", cfg.File, tt.file != "")
			}
		})
	}
}

func TestDataDir(t *testing.T) {
	tests := []struct {
		name string
		flag string
		env  map[string]string
		want string
	}{
		{"flag wins", "/flag", map[string]string{EnvDataDir: "/env", "HOME": "/home/u"}, "/flag"},
		{"env", "", map[string]string{EnvDataDir: "/env", "XDG_DATA_HOME": "/xdg"}, "/env"},
		{"xdg", "", map[string]string{"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/edgellm"},
		{"home", "", map[string]string{"HOME": "/home/u"}, "/home/u/.local/share/edgellm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(WithDataDir(tt.flag), WithLookupEnv(envMap(tt.env)), WithExecutable(noExe))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != tt.want {
				t.Errorf("DataDir = %q, want %q", cfg.DataDir, tt.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want error
	}{
		{"unknown node key", "node:\n  modle: x\n", nil, ErrFile},
		{"bad yaml", "node: [\n", nil, ErrFile},
		{"bad duration", "node:\n  supervisor:\n    stop_timeout: soon\n", nil, ErrFile},
		{"bad log level", "node:\n  log_level: loud\n", nil, ErrInvalid},
		{"bad device from env", "", map[string]string{EnvDevice: "tpu"}, ErrInvalid},
		{"negative restarts", "node:\n  supervisor:\n    max_restarts_per_minute: -1\n", nil, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				writeFile(t, dir, tt.file)
			}
			_, err := Load(WithDataDir(dir), WithLookupEnv(envMap(tt.env)), WithExecutable(noExe))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestExplicitFile(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	path := writeFile(t, other, "node:\n  model: explicit\n")
	writeFile(t, dir, "node:\n  model: in-data-dir\n")
	for _, tt := range []struct {
		name string
		opts []Option
	}{
		{"flag", []Option{WithFile(path)}},
		{"env", []Option{WithLookupEnv(envMap(map[string]string{EnvConfig: path}))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]Option{WithDataDir(dir), WithLookupEnv(envMap(nil)), WithExecutable(noExe)}, tt.opts...)
			cfg, err := Load(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Node.Model != "explicit" || cfg.File != path {
				t.Errorf("model=%q file=%q, want explicit from %s", cfg.Node.Model, cfg.File, path)
			}
		})
	}
	_, err := Load(WithDataDir(dir), WithFile(filepath.Join(dir, "missing.yaml")), WithExecutable(noExe))
	if !errors.Is(err, ErrFile) {
		t.Errorf("missing explicit file: err = %v, want ErrFile", err)
	}
}

func TestDefaultPythonFromVenv(t *testing.T) {
	root := t.TempDir()
	py := filepath.Join(root, ".venv", "bin", "python")
	if err := os.MkdirAll(filepath.Dir(py), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(py, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := func() (string, error) { return filepath.Join(root, "bin", "edgellm"), nil }
	cfg, err := Load(WithDataDir(t.TempDir()), WithLookupEnv(envMap(nil)), WithExecutable(exe))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Supervisor.Python != py {
		t.Errorf("python = %q, want %q", cfg.Node.Supervisor.Python, py)
	}
}

func TestIPFSSettings(t *testing.T) {
	const file = `
ipfs:
  enabled: true
  binary: /file/ipfs
  api_port: 5101
  swarm_port: 4101
  gateway: false
`
	tests := []struct {
		name string
		file string
		env  map[string]string
		want IPFS
		err  bool
	}{
		{"defaults", "", nil, IPFS{Enabled: true, Gateway: true}, false},
		{"file", file, nil, IPFS{Enabled: true, Binary: "/file/ipfs", APIPort: 5101, SwarmPort: 4101}, false},
		{"env over file", file, map[string]string{EnvIPFSBin: "/env/ipfs", EnvIPFSAPIPort: "5202", EnvIPFSSwarmPort: "4202"},
			IPFS{Enabled: true, Binary: "/env/ipfs", APIPort: 5202, SwarmPort: 4202}, false},
		{"disabled by env", file, map[string]string{EnvIPFSEnabled: "false"},
			IPFS{Binary: "/file/ipfs", APIPort: 5101, SwarmPort: 4101}, false},
		{"disabled by file", "ipfs:\n  enabled: false\n", nil, IPFS{Gateway: true}, false},
		{"external api", "", map[string]string{EnvIPFSAPI: "http://127.0.0.1:5001"},
			IPFS{Enabled: true, API: "http://127.0.0.1:5001", Gateway: true}, false},
		{"bad enabled", "", map[string]string{EnvIPFSEnabled: "maybe"}, IPFS{}, true},
		{"bad port env", "", map[string]string{EnvIPFSAPIPort: "http"}, IPFS{}, true},
		{"port out of range", "ipfs:\n  swarm_port: 70000\n", nil, IPFS{}, true},
		{"same ports", "ipfs:\n  api_port: 4001\n  swarm_port: 4001\n", nil, IPFS{}, true},
		{"bad api url", "", map[string]string{EnvIPFSAPI: "127.0.0.1:5001"}, IPFS{}, true},
		{"unknown key", "ipfs:\n  swarm_key: x\n", nil, IPFS{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				writeFile(t, dir, tt.file)
			}
			cfg, err := Load(WithDataDir(dir), WithLookupEnv(envMap(tt.env)), WithExecutable(noExe))
			if tt.err {
				if err == nil {
					t.Fatalf("no error; ipfs = %+v", cfg.IPFS)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.IPFS
			if tt.want.Binary == "" {
				got.Binary = "" // whatever PATH holds
			}
			if got != tt.want {
				t.Errorf("ipfs = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultIPFSFromBin(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(root, ".bin", "ipfs")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := func() (string, error) { return filepath.Join(root, "bin", "edgellm"), nil }
	cfg, err := Load(WithDataDir(t.TempDir()), WithLookupEnv(envMap(nil)), WithExecutable(exe))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IPFS.Binary != bin {
		t.Errorf("ipfs binary = %q, want %q", cfg.IPFS.Binary, bin)
	}
	cfg, err = Load(WithDataDir(t.TempDir()), WithLookupEnv(envMap(map[string]string{EnvIPFSBin: "/env/ipfs"})), WithExecutable(exe))
	if err != nil || cfg.IPFS.Binary != "/env/ipfs" {
		t.Errorf("env: ipfs binary = %q, %v", cfg.IPFS.Binary, err)
	}
}
