// Package cli is the edgellm command line. root.go builds the root command
// and its persistent flags; each command lives in its own file as
// new<Name>Command(app) and is listed once in commands below. Commands are
// flags, output and exit codes over the runtime packages: this machine's
// processes come from localnode (App.openNode, node.go), a swarm run from
// requester (swarm_cluster.go), a worker from volunteer. Commands return
// errors; Main turns an error into one line on stderr and an exit code
// (errors.go).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/privdir"
)

const rootLong = `edgellm runs large language models on a peer-to-peer network of volunteers'
machines. With no peers configured, commands run on this machine: the node starts
its Python backend, which loads the model and generates.

Configuration: defaults < edgellm.yaml (in the data directory, or --config)
< environment (EDGELLM_DATA_DIR, EDGELLM_CONFIG, EDGELLM_MODEL, EDGELLM_MODELS_DIR,
EDGELLM_DEVICE, EDGELLM_PYTHON, EDGELLM_BACKEND_ADDRESS, EDGELLM_LOG_LEVEL) < flags.

Exit codes:
  0    success
  1    other failure
  2    usage error or invalid argument (bad flag, empty prompt, out-of-range value)
  3    not found (e.g. unknown model id)
  4    backend unavailable (it could not start, or died)
  130  interrupted (Ctrl-C)`

// App is what every command shares: standard streams, global flags, and the
// interrupt signal. Build it with Main; commands receive it.
type App struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// interrupt ends on the first SIGINT or SIGTERM; commands that stop
	// cleanly (Abort, staged backend stop) watch it instead of dying.
	interrupt context.Context
	flags     globalFlags
	// started is set once argument parsing succeeded and a command runs; an
	// error before that is a usage error.
	started bool
	log     *slog.Logger
}

type globalFlags struct {
	dataDir    string
	configFile string
	logLevel   string
}

// commands lists every subcommand; add yours here, from its own file.
func commands(app *App) []*cobra.Command {
	return []*cobra.Command{
		newInferCommand(app),
		newModelsCommand(app),
		newModelCommand(app),
		newVersionCommand(app),
		newSwarmCommand(app),
		newWorkerCommand(app),
		newPeersCommand(app),
		newSessionCommand(app),
		newServeCommand(app),
		newBatchCommand(app),
		newBenchCommand(app),
	}
}

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	interrupt, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-interrupt.Done()
		stop() // a second Ctrl-C kills the node at once
	}()
	app := &App{stdin: stdin, stdout: stdout, stderr: stderr, interrupt: interrupt,
		log: slog.New(slog.DiscardHandler)}
	root := NewRootCommand(app)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	if !app.started && !errors.Is(err, ErrUsage) {
		err = fmt.Errorf("%w: %w", ErrUsage, err) // cobra's own: unknown command, bad arguments
	}
	if interrupt.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	fmt.Fprintf(stderr, "edgellm: %s\n", Message(err))
	return ExitCode(err)
}

// NewRootCommand builds the root command with every subcommand.
func NewRootCommand(app *App) *cobra.Command {
	root := &cobra.Command{
		Use:               "edgellm",
		Short:             "Peer-to-peer LLM inference",
		Long:              rootLong,
		SilenceErrors:     true,
		SilenceUsage:      true,
		PersistentPreRunE: app.setup,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&app.flags.dataDir, "data-dir", "",
		"data directory (default $EDGELLM_DATA_DIR, else $XDG_DATA_HOME/edgellm, else ~/.local/share/edgellm)")
	pf.StringVar(&app.flags.configFile, "config", "",
		"config file (default $EDGELLM_CONFIG, else <data-dir>/edgellm.yaml if present)")
	pf.StringVar(&app.flags.logLevel, "log-level", "",
		"log level: debug, info, warn, error; debug also shows the backend's stderr (default warn)")
	root.SetOut(app.stdout)
	root.SetErr(app.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	})
	root.AddCommand(commands(app)...)
	return root
}

// setup runs before every command (subcommands must not define their own
// PersistentPreRunE): it marks parsing as done and sets up logging.
func (app *App) setup(cmd *cobra.Command, _ []string) error {
	app.started = true
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Node.LogLevel)); err != nil {
		return fmt.Errorf("%w: log level: %w", ErrUsage, err)
	}
	app.log = slog.New(slog.NewTextHandler(app.stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// config loads the node configuration with the global flags on top.
func (app *App) config(cmd *cobra.Command, overrides ...func(*config.Config)) (*config.Config, error) {
	opts := []config.Option{config.WithDataDir(app.flags.dataDir), config.WithFile(app.flags.configFile)}
	if cmd.Flags().Changed("log-level") {
		opts = append(opts, config.WithOverride(func(c *config.Config) { c.Node.LogLevel = app.flags.logLevel }))
	}
	for _, o := range overrides {
		opts = append(opts, config.WithOverride(o))
	}
	cfg, err := config.Load(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if err := ensureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ensureDataDir creates the data directory 0700 when missing and refuses
// one that another user owns or that group or others may write (exit 2):
// it holds the identity key, the swarm secret and the backend's socket, so
// whoever can write it can take the node over. Decision: refuse rather than
// chmod, since an unsafe directory may already have been tampered with;
// 0755 (readable) is accepted, as secret files in it are 0600 themselves.
func ensureDataDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
	}
	if err := privdir.Check(dir); err != nil {
		return fmt.Errorf("%w: data directory: %w", ErrUsage, err)
	}
	return nil
}

// usageArgs wraps a cobra argument check so that its failure is a usage
// error.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return fmt.Errorf("%w: %w (see %s --help)", ErrUsage, err, cmd.CommandPath())
		}
		return nil
	}
}
