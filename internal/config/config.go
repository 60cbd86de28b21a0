// Package config holds the Go node's typed configuration: documented defaults,
// overridden by the YAML file (edgellm.yaml in the data directory, or
// --config), overridden by environment variables, overridden by flags.
//
// The file's node: section is the Go node's; its backend: section belongs to
// the Python backend, which reads it itself (the node passes --config on).
package config

import (
	"fmt"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// FileName is the config file looked up in the data directory.
const FileName = "edgellm.yaml"

// DefaultModel is the model id used when none is configured: the embedded
// SmolLM2-135M-Instruct.
const DefaultModel = "smollm2-135m"

// LogLevels lists the accepted values of Node.LogLevel, most verbose first.
var LogLevels = []string{"debug", "info", "warn", "error"}

// Devices lists the accepted values of Node.Device; "" lets the backend decide.
var Devices = []string{"", "auto", "cpu", "cuda"}

// Config is the whole node configuration.
type Config struct {
	// DataDir is the node's data directory (config file, logs, the backend's
	// socket, and by default the model store). Not read from the file.
	// Default: $EDGELLM_DATA_DIR, else $XDG_DATA_HOME/edgellm, else
	// ~/.local/share/edgellm.
	DataDir string `yaml:"-"`
	// File is the config file that was loaded: --config, else $EDGELLM_CONFIG,
	// else <DataDir>/edgellm.yaml when it exists. Empty when none was loaded.
	File string `yaml:"-"`
	// Node is the Go node's own section.
	Node Node `yaml:"node"`
	// Backend is the backend: section. The Python backend reads and validates
	// it itself; the node keeps it only so that strict decoding accepts it.
	Backend yaml.Node `yaml:"backend"`
}

// Node holds the Go node's settings (the file's node: section).
type Node struct {
	// LogLevel is the node's log verbosity: debug, info, warn or error. At
	// debug the backend's stderr is shown too. Default "warn";
	// env EDGELLM_LOG_LEVEL; flag --log-level.
	LogLevel string `yaml:"log_level"`
	// Model is the model id used when a command names none. Default
	// "smollm2-135m"; env EDGELLM_MODEL; flag --model.
	Model string `yaml:"model"`
	// ModelsDir is the backend's model store, passed as --models-dir. Default
	// "" (the backend's own default, <data dir>/models); env EDGELLM_MODELS_DIR.
	ModelsDir string `yaml:"models_dir"`
	// Device is where the backend computes: auto, cpu or cuda, passed as
	// --device. Default "" (the backend's own setting, itself default auto);
	// env EDGELLM_DEVICE.
	Device string `yaml:"device"`
	// BackendAddress is the address of a backend that is already running
	// (unix:/abs/path.sock or host:port); when set, the node uses it and
	// starts none. Default "" (start one); env EDGELLM_BACKEND_ADDRESS.
	BackendAddress string `yaml:"backend_address"`
	// Supervisor controls the backend process the node starts.
	Supervisor Supervisor `yaml:"supervisor"`
}

// Supervisor holds the settings of the backend process supervisor.
type Supervisor struct {
	// Python is the interpreter that runs the backend. Default:
	// $EDGELLM_PYTHON, else <dir of the edgellm binary>/../.venv/bin/python
	// when it exists, else python3 on PATH.
	Python string `yaml:"python"`
	// Listen is the backend's gRPC address, unix:/abs/path.sock or
	// 127.0.0.1:PORT. Default "" (a unix socket in the data directory, or in
	// the temp directory when that path is too long).
	Listen string `yaml:"listen"`
	// StartTimeout bounds the wait for the backend to report SERVING.
	// Default 2m.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// StopTimeout is how long a stopping backend gets after SIGTERM before
	// SIGKILL. Default 10s.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// MaxRestartsPerMinute bounds restarts of a backend that keeps dying;
	// beyond it the backend stays down and requests fail UNAVAILABLE.
	// 0 disables restarts. Default 5.
	MaxRestartsPerMinute int `yaml:"max_restarts_per_minute"`
}

// Default returns the configuration before the data directory, file,
// environment and flags are applied.
func Default() *Config {
	return &Config{
		Node: Node{
			LogLevel: "warn",
			Model:    DefaultModel,
			Supervisor: Supervisor{
				StartTimeout:         2 * time.Minute,
				StopTimeout:          10 * time.Second,
				MaxRestartsPerMinute: 5,
			},
		},
	}
}

// Validate reports the first setting outside its allowed values.
func (c *Config) Validate() error {
	n := c.Node
	switch {
	case c.DataDir == "":
		return fmt.Errorf("%w: data directory is empty", ErrInvalid)
	case !slices.Contains(LogLevels, n.LogLevel):
		return fmt.Errorf("%w: log level %q: want one of %v", ErrInvalid, n.LogLevel, LogLevels)
	case !slices.Contains(Devices, n.Device):
		return fmt.Errorf("%w: device %q: want auto, cpu or cuda", ErrInvalid, n.Device)
	case n.Model == "":
		return fmt.Errorf("%w: model is empty", ErrInvalid)
	case n.Supervisor.StartTimeout <= 0:
		return fmt.Errorf("%w: supervisor.start_timeout must be positive", ErrInvalid)
	case n.Supervisor.StopTimeout <= 0:
		return fmt.Errorf("%w: supervisor.stop_timeout must be positive", ErrInvalid)
	case n.Supervisor.MaxRestartsPerMinute < 0:
		return fmt.Errorf("%w: supervisor.max_restarts_per_minute must not be negative", ErrInvalid)
	}
	return nil
}
