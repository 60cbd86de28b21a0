package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/edgellm/edgellm/internal/config"
)

// exampleFile is a complete edgellm.yaml with every node setting at its
// default (except where noted); the README can quote it.
const exampleFile = `
node:
  log_level: warn            # debug shows the backend's stderr too
  model: smollm2-135m        # model used when a command names none
  models_dir: ""             # backend model store; "" = <data dir>/models
  device: ""                 # auto, cpu or cuda; "" = the backend's setting
  engine: ""                 # torch or vllm; "" = the backend's setting (torch)
  backend_address: ""        # use a running backend instead of starting one
  supervisor:
    python: ""               # "" = $EDGELLM_PYTHON, <bin>/../.venv/bin/python, python3
    listen: ""               # "" = unix socket in <data dir>/run
    start_timeout: 2m
    stop_timeout: 30s
    max_restarts_per_minute: 5
ipfs:                        # the IPFS node (Kubo) run beside the backend
  enabled: true              # false: no IPFS node, no KV cache
  api: ""                    # use a running Kubo (http://host:port) instead of starting one
  binary: ""                 # "" = $EDGELLM_IPFS_BIN, <bin>/../.bin/ipfs, ipfs on PATH
  api_port: 0                # 0 = API on a unix socket in the repo; N = 127.0.0.1:N
  swarm_port: 0              # TCP port peers' Kubos connect to; 0 = a free port
  gateway: false             # also serve the HTTP gateway (a unix socket in the repo)
backend:                     # read by the Python backend itself
  device: auto
  calibrate: true
`

func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "edgellm-example")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, config.FileName), []byte(exampleFile), 0o600)
	cfg, err := config.Load(
		config.WithDataDir(dir),
		config.WithLookupEnv(func(string) (string, bool) { return "", false }),
		config.WithOverride(func(c *config.Config) { c.Node.LogLevel = "info" }), // a --log-level flag
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	n := cfg.Node
	fmt.Println(n.LogLevel, n.Model, n.Supervisor.StartTimeout, n.Supervisor.MaxRestartsPerMinute, cfg.IPFS.Enabled)
	// Output: info smollm2-135m 2m0s 5 true
}
