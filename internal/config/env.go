package config

import (
	"fmt"
	"strconv"
)

// Environment variables the node reads; this file and DefaultDataDir are the
// only places that read them.
const (
	// EnvDataDir sets Config.DataDir.
	EnvDataDir = "EDGELLM_DATA_DIR"
	// EnvConfig names the config file when --config is not given.
	EnvConfig = "EDGELLM_CONFIG"
	// EnvLogLevel sets Node.LogLevel.
	EnvLogLevel = "EDGELLM_LOG_LEVEL"
	// EnvModel sets Node.Model.
	EnvModel = "EDGELLM_MODEL"
	// EnvModelsDir sets Node.ModelsDir.
	EnvModelsDir = "EDGELLM_MODELS_DIR"
	// EnvDevice sets Node.Device.
	EnvDevice = "EDGELLM_DEVICE"
	// EnvEngine sets Node.Engine. The backend reads the same variable.
	EnvEngine = "EDGELLM_ENGINE"
	// EnvBackendAddress sets Node.BackendAddress.
	EnvBackendAddress = "EDGELLM_BACKEND_ADDRESS"
	// EnvPython sets Node.Supervisor.Python.
	EnvPython = "EDGELLM_PYTHON"
	// EnvIPFSEnabled sets IPFS.Enabled (true/false, 1/0).
	EnvIPFSEnabled = "EDGELLM_IPFS_ENABLED"
	// EnvIPFSAPI sets IPFS.API. The backend reads the same variable: the
	// node sets it for the backend to the API of the Kubo it runs.
	EnvIPFSAPI = "EDGELLM_IPFS_API"
	// EnvIPFSBin sets IPFS.Binary.
	EnvIPFSBin = "EDGELLM_IPFS_BIN"
	// EnvIPFSAPIPort sets IPFS.APIPort.
	EnvIPFSAPIPort = "EDGELLM_IPFS_API_PORT"
	// EnvIPFSSwarmPort sets IPFS.SwarmPort.
	EnvIPFSSwarmPort = "EDGELLM_IPFS_SWARM_PORT"
)

// envSetting maps one environment variable onto the config. An empty value
// counts as unset.
type envSetting struct {
	name  string
	apply func(*Config, string) error
}

func envSettings() []envSetting {
	return []envSetting{
		{EnvLogLevel, func(c *Config, v string) error { c.Node.LogLevel = v; return nil }},
		{EnvModel, func(c *Config, v string) error { c.Node.Model = v; return nil }},
		{EnvModelsDir, func(c *Config, v string) error { c.Node.ModelsDir = v; return nil }},
		{EnvDevice, func(c *Config, v string) error { c.Node.Device = v; return nil }},
		{EnvEngine, func(c *Config, v string) error { c.Node.Engine = v; return nil }},
		{EnvBackendAddress, func(c *Config, v string) error { c.Node.BackendAddress = v; return nil }},
		{EnvPython, func(c *Config, v string) error { c.Node.Supervisor.Python = v; return nil }},
		{EnvIPFSEnabled, func(c *Config, v string) (err error) { c.IPFS.Enabled, err = strconv.ParseBool(v); return err }},
		{EnvIPFSAPI, func(c *Config, v string) error { c.IPFS.API = v; return nil }},
		{EnvIPFSBin, func(c *Config, v string) error { c.IPFS.Binary = v; return nil }},
		{EnvIPFSAPIPort, func(c *Config, v string) (err error) { c.IPFS.APIPort, err = strconv.Atoi(v); return err }},
		{EnvIPFSSwarmPort, func(c *Config, v string) (err error) { c.IPFS.SwarmPort, err = strconv.Atoi(v); return err }},
	}
}

func applyEnv(cfg *Config, lookupEnv func(string) (string, bool)) error {
	for _, s := range envSettings() {
		v, ok := lookupEnv(s.name)
		if !ok || v == "" {
			continue
		}
		if err := s.apply(cfg, v); err != nil {
			return fmt.Errorf("%w: %s=%q: %w", ErrInvalid, s.name, v, err)
		}
	}
	return nil
}
