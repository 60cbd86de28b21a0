package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/internal/volunteer"
)

// newModelCommand is `edgellm model add|list|show|rm`: the model store, run by
// the backend's Python (`python -m edgellm.models`) without starting a node, so
// that adding a model needs no daemon and a terminal sees the conversion's
// progress line (stderr is handed over as is; piped, the tool is quiet).
func newModelCommand(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Manage the model store: add, list, show, rm, publish, pull",
		Long: `Manage this machine's model store (node.models_dir, default <data-dir>/models).

  model add PATH [--id ID]  add a transformers model directory (config.json,
                            *.safetensors, tokenizer) or a single .gguf file;
                            prints the id and the weights CID
  model list [--json]       id, architecture, parameters, layers, size, weights
                            CID and source of every model
  model show ID [--json]    one model's manifest
  model rm ID               remove a model from the store
  model publish ID          add a model to this node's Kubo (a running worker or
                            serve of the same data directory); prints the id,
                            the weights CID and the model's directory CID
  model pull ID|CID         fetch a model from the workers that share it (their
                            records name its directory CID) through this
                            node's Kubo (bitswap in the swarm's private IPFS
                            network), verify every file against its CID and
                            install it; a rerun resumes from the blocks fetched`,
		Args: usageArgs(cobra.NoArgs),
	}
	var id string
	add := &cobra.Command{
		Use:   "add PATH [--id ID]",
		Short: "Add a transformers model directory or a .gguf file to the store",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			tool := []string{"add", args[0]}
			if id != "" {
				tool = append(tool, "--id", id)
			}
			return app.runModelTool(cmd, tool...)
		},
	}
	add.Flags().StringVar(&id, "id", "", "model id (default: the file or directory name)")
	var listJSON, showJSON bool
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the models in the store",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.runModelTool(cmd, withJSON([]string{"list"}, listJSON)...)
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, `print {"models": [...]}`)
	show := &cobra.Command{
		Use:   "show ID [--json]",
		Short: "Show one model's manifest",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.runModelTool(cmd, withJSON([]string{"show", args[0]}, showJSON)...)
		},
	}
	show.Flags().BoolVar(&showJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a model from the store",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.runModelTool(cmd, "rm", args[0])
		},
	}
	publish := &cobra.Command{
		Use:   "publish ID",
		Short: "Add a model to this node's Kubo and print its CIDs",
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.runModelTool(cmd, "publish", args[0])
		},
	}
	pull := newModelPullCommand(app)
	cmd.AddCommand(add, list, show, rm, publish, pull)
	return cmd
}

func withJSON(args []string, on bool) []string {
	if on {
		return append(args, "--json")
	}
	return args
}

// modelToolArgs is the Python tool's command line for this configuration.
func modelToolArgs(cfg *config.Config, tool []string) []string {
	args := append([]string{"-m", "edgellm.models"}, tool...)
	args = append(args, "--data-dir", cfg.DataDir, "--reason-fd", "3")
	if cfg.Node.ModelsDir != "" {
		args = append(args, "--models-dir", cfg.Node.ModelsDir)
	}
	if cfg.File != "" {
		args = append(args, "--config", cfg.File)
	}
	return args
}

// runModelTool runs `python -m edgellm.models TOOL...`; a failure's one-line
// reason comes back on fd 3 as KIND<TAB>REASON and becomes this command's error.
func (app *App) runModelTool(cmd *cobra.Command, tool ...string) error {
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	err = app.modelTool(app.interrupt, cfg, app.stdout, tool...)
	if app.interrupt.Err() != nil {
		return ErrInterrupted
	}
	return err
}

// modelTool runs the model tool under ctx with its stdout to stdout.
func (app *App) modelTool(ctx context.Context, cfg *config.Config, stdout io.Writer, tool ...string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("model %s: %w", tool[0], err)
	}
	defer r.Close()
	c := exec.CommandContext(ctx, cfg.Node.Supervisor.Python, modelToolArgs(cfg, tool)...)
	c.Stdout, c.Stderr = stdout, app.stderr
	c.ExtraFiles = []*os.File{w}
	c.SysProcAttr = toolProcAttr()
	c.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	startErr := c.Start()
	w.Close()
	if startErr != nil {
		return fmt.Errorf("%w: model %s: cannot run %s: %w", ErrUnavailable, tool[0], cfg.Node.Supervisor.Python, startErr)
	}
	reason, _ := io.ReadAll(r)
	if waitErr := c.Wait(); waitErr != nil {
		return modelToolError(tool[0], reason, waitErr)
	}
	return nil
}

// modelPublisher adds a model of the store to the Kubo at api with the model
// tool (`publish`), for a worker to share its models; it returns the
// directory CID the tool prints last.
func (app *App) modelPublisher(cfg *config.Config, api string) volunteer.PublishFunc {
	return func(ctx context.Context, modelID string) (string, error) {
		var out bytes.Buffer
		if err := app.modelTool(ctx, cfg, &out, "publish", modelID, "--ipfs-api", api); err != nil {
			return "", err
		}
		fields := strings.Fields(out.String())
		if len(fields) != 3 {
			return "", fmt.Errorf("model publish %s: unexpected output %q", modelID, out.String())
		}
		return fields[2], nil
	}
}

// modelToolError maps the tool's reason line to the CLI's error kinds.
func modelToolError(sub string, reason []byte, waitErr error) error {
	kind, text, ok := strings.Cut(string(bytes.TrimSpace(reason)), "\t")
	if !ok {
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) {
			return fmt.Errorf("model %s: the model tool failed (%v)", sub, exit)
		}
		return fmt.Errorf("model %s: %w", sub, waitErr)
	}
	switch kind {
	case "invalid":
		return fmt.Errorf("%w: %s", ErrInvalidArgument, text)
	case "not_found":
		return fmt.Errorf("%w: %s", ErrNotFound, text)
	case "holder":
		return fmt.Errorf("%w: %s", errHolder, text)
	}
	return errors.New(text)
}

// sharePublisher is what a worker shares its models with: the model tool
// against the node's Kubo; nil when the node runs none.
func (app *App) sharePublisher(cfg *config.Config, n *localnode.Node) volunteer.PublishFunc {
	if n.IPFS() == nil {
		return nil
	}
	return app.modelPublisher(cfg, n.IPFS().URL())
}
