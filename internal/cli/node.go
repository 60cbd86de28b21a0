package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/localnode"
)

// openNode opens this machine's backend and IPFS node (localnode.Open) with
// the CLI's output: warnings as "edgellm: warning: …" lines on stderr, a
// status line while the IPFS node starts slowly on a terminal, and at log
// level debug the backend's and Kubo's output on stderr too. Callers must
// Close it. ctx bounds the start only.
func (app *App) openNode(ctx context.Context, cfg *config.Config, opts ...localnode.Option) (*localnode.Node, error) {
	all := []localnode.Option{
		localnode.WithLogger(app.log), localnode.WithWarnings(app.warn), localnode.WithIPFSWaiting(app.ipfsWaitLine()),
	}
	if cfg.Node.LogLevel == "debug" {
		all = append(all, localnode.WithEcho(app.stderr))
	}
	return localnode.Open(ctx, cfg, append(all, opts...)...)
}

// warn prints one warning line on stderr.
func (app *App) warn(line string) {
	fmt.Fprintf(app.stderr, "edgellm: warning: %s\n", line)
}

// ipfsWaitLine returns a status line for a slow IPFS start on a terminal,
// nil when stderr is not one.
func (app *App) ipfsWaitLine() func(time.Duration) {
	f, ok := app.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(elapsed time.Duration) {
		if elapsed == 0 {
			fmt.Fprint(f, "\r\x1b[K")
			return
		}
		fmt.Fprintf(f, "\r\x1b[Kstarting the IPFS node… %ds", int(elapsed.Seconds()))
	}
}
