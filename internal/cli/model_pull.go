package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/volunteer"
	"github.com/edgellm/edgellm/p2p"
)

// errHolder marks a pull that failed because of the holder (unreachable,
// does not provide the CID, content that is not what its record claims):
// the next holder is tried.
var errHolder = errors.New("holder refused")

type modelPullOptions struct {
	swarm    swarmFlags
	from     string
	budgetMB int
	timeout  time.Duration
}

const modelPullLong = `Fetch a model from the swarm into this machine's store, through the Kubo of
the running worker (or serve) of the same data directory.

The command joins the swarm as a short-lived client, reads the workers' signed
capability records and keeps those that share the model (by id, directory CID
or weights CID) with a directory CID and an IPFS node; --from keeps one peer.
It connects this node's Kubo to each holder's in turn (fastest first) and
fetches the directory over bitswap, with a progress line on a terminal. Every
file is checked against its CID as it arrives, the weights against what the
holder's record claims (a holder whose content differs is refused and the next
one tried), and the model is installed atomically: the store never holds half
of it. A rerun after an interrupted pull fetches only the blocks still missing.
stderr ends with the bytes that came over the network; stdout prints the id
and weights CID.`

func newModelPullCommand(app *App) *cobra.Command {
	o := &modelPullOptions{}
	cmd := &cobra.Command{
		Use:   "pull ID|CID [--from PEER] [--disk-budget-mb N] [--timeout D]",
		Short: "Fetch a model from the swarm's holders into the store",
		Long:  modelPullLong,
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE:  func(cmd *cobra.Command, args []string) error { return app.runModelPull(cmd, args[0], o) },
	}
	o.swarm.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "pull only from this worker (its peer id)")
	f.IntVar(&o.budgetMB, "disk-budget-mb", 0, "refuse, before fetching, a model larger than this (default: free disk)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "longest time to find holders, and for each holder to provide the model")
	return cmd
}

// pullHolder is one worker whose record shares the wanted model.
type pullHolder struct {
	peer  peer.ID
	model p2p.Model
	addrs []string // its Kubo's dial addresses (with /p2p)
	rtt   time.Duration
}

// pullHolders are the records sharing want (id, directory CID or weights
// CID) with an IPFS node, only from when set; measured round trips first,
// fastest first.
func pullHolders(peers []p2p.PeerInfo, want string, from peer.ID) []pullHolder {
	var out []pullHolder
	for _, p := range peers {
		r := p.Record
		if from != "" && r.PeerID != from {
			continue
		}
		dial := r.IPFSDialAddrs()
		for _, m := range r.Models {
			if m.DirCID == "" || len(dial) == 0 || (m.ID != want && m.DirCID != want && m.WeightsCID != want) {
				continue
			}
			h := pullHolder{peer: r.PeerID, model: m, rtt: p.RTT}
			for _, a := range dial {
				h.addrs = append(h.addrs, a.String())
			}
			out = append(out, h)
			break
		}
	}
	slices.SortStableFunc(out, func(a, b pullHolder) int {
		switch {
		case (a.rtt == 0) != (b.rtt == 0):
			return map[bool]int{true: 1, false: -1}[a.rtt == 0]
		default:
			return int(a.rtt - b.rtt)
		}
	})
	return out
}

// tryHolders pulls from each holder in turn until one succeeds; a holder's
// failure (errHolder) moves on to the next, any other failure ends the pull.
func tryHolders(want string, holders []pullHolder, pull func(pullHolder) error) error {
	var refused []string
	for _, h := range holders {
		err := pull(h)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errHolder) {
			return err
		}
		refused = append(refused, fmt.Sprintf("%s: %s", h.peer, strings.TrimPrefix(err.Error(), errHolder.Error()+": ")))
	}
	return fmt.Errorf("%w: model pull %s: no holder served it (%s)", ErrUnavailable, want, strings.Join(refused, "; "))
}

func (app *App) runModelPull(cmd *cobra.Command, want string, o *modelPullOptions) error {
	if o.timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive", ErrInvalidArgument)
	}
	var from peer.ID
	if o.from != "" {
		id, err := peer.Decode(o.from)
		if err != nil {
			return fmt.Errorf("%w: --from %q is not a peer id: %w", ErrInvalidArgument, o.from, err)
		}
		from = id
	}
	cfg, err := app.config(cmd)
	if err != nil {
		return err
	}
	peers, err := app.lookupRecords(cfg, o.swarm, o.timeout, "")
	if err != nil {
		return err
	}
	holders := pullHolders(peers, want, from)
	if len(holders) == 0 {
		who := "no worker in the swarm shares"
		if from != "" {
			who = "worker " + from.String() + " does not share"
		}
		return fmt.Errorf("%w: %s model %s (searched for %s)", ErrNotFound, who, want, o.timeout)
	}
	err = tryHolders(want, holders, func(h pullHolder) error {
		tool := []string{"pull", h.model.DirCID, "--timeout", strconv.FormatFloat(o.timeout.Seconds(), 'f', -1, 64),
			"--claim-id", h.model.ID, "--claim-weights", h.model.WeightsCID}
		if o.budgetMB > 0 {
			tool = append(tool, "--disk-budget-mb", strconv.Itoa(o.budgetMB))
		}
		for _, a := range h.addrs {
			tool = append(tool, "--connect", a)
		}
		return app.modelTool(app.interrupt, cfg, app.stdout, tool...)
	})
	if app.interrupt.Err() != nil {
		return ErrInterrupted
	}
	return err
}

// requestedPull is a worker's volunteer.PullFunc (worker --accept-pulls):
// model pull's tool, from the holders the request names, into this
// machine's store through the worker's own Kubo, within budgetMB (0: the
// free disk).
func (app *App) requestedPull(cfg *config.Config, budgetMB int) volunteer.PullFunc {
	return func(ctx context.Context, ask p2p.PullAsk) error {
		tool := []string{"pull", ask.DirCID, "--timeout", strconv.FormatFloat(requestedPullTimeout.Seconds(), 'f', -1, 64),
			"--claim-id", ask.ModelID, "--claim-weights", ask.WeightsCID}
		if budgetMB > 0 {
			tool = append(tool, "--disk-budget-mb", strconv.Itoa(budgetMB))
		}
		for _, a := range ask.Holders {
			tool = append(tool, "--connect", a.String())
		}
		return app.modelTool(ctx, cfg, io.Discard, tool...)
	}
}

// requestedPullTimeout is model pull's --timeout for a requested pull: the
// longest time for a holder to provide the model.
const requestedPullTimeout = 30 * time.Second
