package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/version"
)

// versionJSON is the output of `version --json`; Backend is empty and
// BackendError set when the backend could not be reached.
type versionJSON struct {
	Version       string `json:"version"`
	Commit        string `json:"commit"`
	Go            string `json:"go"`
	Backend       string `json:"backend,omitempty"`
	BackendDevice string `json:"backend_device,omitempty"`
	BackendError  string `json:"backend_error,omitempty"`
}

func newVersionCommand(app *App) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the node's and the backend's versions",
		Long: `Print the Go node's version, the Go toolchain, and the backend's version and
device. It starts the backend to ask it; when the backend cannot start it
still succeeds and says "backend: unavailable (reason)".`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionJSON{Version: version.Version, Commit: version.Commit, Go: version.GoVersion()}
			v.Backend, v.BackendDevice, v.BackendError = app.backendVersion(cmd)
			if jsonOut {
				return writeJSON(app.stdout, v)
			}
			fmt.Fprintf(app.stdout, "edgellm %s\ngo: %s\n", version.String(), v.Go)
			if v.BackendError != "" {
				fmt.Fprintf(app.stdout, "backend: unavailable (%s)\n", v.BackendError)
			} else {
				fmt.Fprintf(app.stdout, "backend: %s (%s)\n", v.Backend, v.BackendDevice)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// backendVersion starts the backend to ask its version and device; on
// failure it returns the reason as one line instead.
func (app *App) backendVersion(cmd *cobra.Command) (ver, device, reason string) {
	cfg, err := app.config(cmd)
	if err != nil {
		return "", "", strings.TrimPrefix(Message(err), "backend unavailable: ")
	}
	n, err := app.openNode(app.interrupt, cfg)
	if err != nil {
		return "", "", strings.TrimPrefix(Message(err), "backend unavailable: ")
	}
	defer app.closeQuietly(n)
	st, err := n.Status(app.interrupt)
	if err != nil {
		return "", "", strings.TrimPrefix(Message(err), "backend unavailable: ")
	}
	return st.GetBackendVersion(), st.GetDevice(), ""
}
