package cli

import (
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
)

// engineFlag is --engine on the commands whose backend serves requests
// (worker, serve): it overrides node.engine. An unknown name fails in
// config.Validate (exit 2); a known engine whose package is missing makes
// the backend exit with one line naming what to install.
type engineFlag struct{ name string }

func (e *engineFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.name, "engine", "", "compute engine: torch or vllm (default $EDGELLM_ENGINE, else node.engine, else torch)")
}

// override sets node.engine when --engine was given.
func (e *engineFlag) override(cmd *cobra.Command) func(*config.Config) {
	changed := cmd.Flags().Changed("engine")
	return func(c *config.Config) {
		if changed {
			c.Node.Engine = e.name
		}
	}
}
