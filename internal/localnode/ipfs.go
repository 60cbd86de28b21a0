package localnode

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/linetail"
)

// startIPFS starts (or finds) the IPFS node as cfg.IPFS and set say. An
// error says, in one line, why the node runs without one; a start cut short
// by ctx is none (Open then fails at the backend's start anyway).
func (n *Node) startIPFS(ctx context.Context, cfg *config.Config, set *settings) error {
	c := cfg.IPFS
	switch {
	case !c.Enabled:
		return nil
	case c.API != "":
		n.ipfsAPI = ipfs.NewClient(c.API)
		return nil
	case c.Binary == "":
		return errors.New("no Kubo binary: set ipfs.binary or " + config.EnvIPFSBin + ", or run `make setup`")
	}
	logPath := filepath.Join(cfg.DataDir, "logs", "ipfs.log")
	logFile, err := openLog(logPath)
	if err != nil {
		return errors.New(linetail.OneLine(err.Error()))
	}
	opts := ipfs.Options{
		Binary: c.Binary, RepoDir: filepath.Join(cfg.DataDir, "ipfs"), APIPort: c.APIPort,
		Gateway: c.Gateway, SwarmKey: set.swarmKey, SwarmPort: c.SwarmPort,
		Log: set.output(logFile), Logger: set.logger(), Waiting: set.waiting, OnRestart: set.onIPFSRestart,
	}
	if set.swarmKey != nil {
		opts.SwarmIPs = ipfs.SwarmIPsOf(set.listen)
	}
	d, err := ipfs.Start(ctx, opts)
	if err != nil {
		logFile.Close()
		if ctx.Err() != nil {
			return nil
		}
		return errors.New(linetail.OneLine(fmt.Sprintf("%s; log %s", startFailure(err), logPath)))
	}
	n.ipfs, n.ipfsAPI, n.ipfsLog = d, d.Client(), logFile
	return nil
}

// startFailure is why the IPFS node did not start: for a start error its
// cause and the last line Kubo wrote (the whole output is in the log).
func startFailure(err error) string {
	var se *ipfs.StartError
	if !errors.As(err, &se) {
		return err.Error()
	}
	why := strings.TrimPrefix(se.Err.Error(), ipfs.ErrStartFailed.Error()+": ")
	if len(se.Tail) > 0 {
		why += ": " + se.Tail[len(se.Tail)-1]
	}
	return why
}

// closeIPFS stops the IPFS node of a node whose backend did not start.
func (n *Node) closeIPFS() {
	if n.ipfs != nil {
		n.ipfs.Close()
	}
	if n.ipfsLog != nil {
		n.ipfsLog.Close()
	}
}
