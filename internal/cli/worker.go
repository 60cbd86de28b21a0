package cli

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/internal/volunteer"
	"github.com/edgellm/edgellm/p2p"
)

// leaveTimeout bounds the withdrawal on Ctrl-C / SIGTERM.
const leaveTimeout = 10 * time.Second

const workerLong = `Volunteer this machine: start the backend, load the model, join the swarm and
advertise a signed capability record (device, memory, models with their weights
CID and layers, measured speeds, load, price, region) until stopped.

--model may be repeated, or be "all" (every model in the store): the worker
then serves several models. It loads the first at start and the others when a
member's session asks for one, within backend.model_memory_mb (edgellm.yaml;
default half this machine's memory), unloading the least recently used model
no session runs when it needs room. The record lists every served model, each
marked loaded or not with its last load time, so planners prefer workers that
have it loaded. A model larger than the budget is refused at start.

The swarm comes from --join-file FILE, EDGELLM_JOIN or --join - (stdin), else
from <data-dir>/swarm.join (edgellm swarm init); --join STRING also works but
shows the secret to every local user in the process list. Members are found
through the join string's bootstrap peers, --bootstrap and mDNS on the LAN. The
record is refreshed every minute and expires after three; Ctrl-C or SIGTERM
leaves gracefully (a signed withdrawal, then the backend stops) and exits 0. A worker that crashes drops out of others' view when
its record expires.

Listen addresses are TCP multiaddrs (port 0 picks a free port). QUIC is refused:
libp2p cannot protect it with the swarm secret. While running, the worker writes
<data-dir>/worker.json (0600) with its peer id, addresses and a join string
through it, which edgellm swarm join-string prints; the worker does not print it.

The worker also runs an IPFS node (Kubo, see the ipfs: config section) in
the swarm's private IPFS network, listening on the same IPs as --listen at
ipfs.swarm_port; its peer id and addresses go into the record so members
connect their IPFS nodes to it and fetch KV-cache blocks from it. Every few
seconds it announces the KV block keys its backend holds (DHT provider
records, renewed while held) and answers members' requests for manifests of
them (/edgellm/kv/1.0.0), so a prompt prefix computed here is reused anywhere.

Members' infer commands may ask the worker to run layers of the model it serves
(/edgellm/cluster/1.0.0): it then joins the requester's Ray cluster, bound to
--ray-address, as a node offering the resource "peer:<its peer id>", at most
--max-sessions at a time, and leaves it (stopping only the Ray processes it
started) when the requester leaves, is lost, or the worker stops.

With --accept-pulls (off by default) the worker also answers members' pull
requests (/edgellm/pull/1.0.0; its record says it does): when a member's
request finds no worker to serve a model that some peer holds (shares it over
IPFS), it asks such a worker to fetch it from the holders, as edgellm model
pull does (verified, installed whole, refused before fetching beyond
--pull-disk-budget-mb), then serve it beside its other models. One pull runs at
a time; a request that names no holder is refused.`

type workerOptions struct {
	engine      engineFlag
	swarm       swarmFlags
	listen      []string
	models      []string
	price       float64
	label       string
	maxSessions uint32
	rayAddress  string
	refresh     time.Duration
	recordTTL   time.Duration
	acceptPulls bool
	pullBudget  int // MiB; 0: the free disk
}

func newWorkerCommand(app *App) *cobra.Command {
	o := &workerOptions{}
	cmd := &cobra.Command{
		Use:   "worker [--join-file FILE] [--listen ADDRS] [--price P] [--label L]",
		Short: "Join a swarm and serve a model to its members",
		Long:  workerLong,
		Example: `  edgellm worker --join-file join.txt
  edgellm worker --listen /ip4/0.0.0.0/tcp/4001 --price 0.5 --label eu-west`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return app.runWorker(cmd, o) },
	}
	o.swarm.register(cmd)
	o.engine.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&o.listen, "listen", nil, "listen multiaddrs, comma-separated (default /ip4/0.0.0.0/tcp/0,/ip6/::/tcp/0)")
	f.StringArrayVar(&o.models, "model", nil, `model to serve; repeat for several, or "all" for every model in the store (default $EDGELLM_MODEL, else node.model, else smollm2-135m)`)
	f.Float64Var(&o.price, "price", 0, "price per 1000 tokens, in credits (0 = free)")
	f.StringVar(&o.label, "label", "", "region label shown to others, e.g. eu-west")
	f.Uint32Var(&o.maxSessions, "max-sessions", 1, "most inference sessions served at once")
	f.StringVar(&o.rayAddress, "ray-address", "", "address a Ray head should use to reach this machine (default: its first non-loopback IPv4)")
	f.DurationVar(&o.refresh, "refresh", p2p.DefaultRefreshInterval, "how often the capability record is re-published")
	f.DurationVar(&o.recordTTL, "record-ttl", p2p.DefaultRecordTTL, "how long a capability record stays valid (at least 3x --refresh)")
	f.BoolVar(&o.acceptPulls, "accept-pulls", false, "pull and serve a model members ask the swarm for and no worker serves yet, from a peer that holds it")
	f.IntVar(&o.pullBudget, "pull-disk-budget-mb", 0, "with --accept-pulls: refuse, before fetching, a model larger than this (default: free disk)")
	return cmd
}

func (o *workerOptions) validate() error {
	switch {
	case math.IsNaN(o.price) || math.IsInf(o.price, 0) || o.price < 0 || o.price > 1e9:
		return fmt.Errorf("%w: --price must be between 0 and 1e9", ErrInvalidArgument)
	case len(o.label) > 64 || !utf8.ValidString(o.label):
		return fmt.Errorf("%w: --label must be at most 64 bytes of UTF-8", ErrInvalidArgument)
	case o.maxSessions == 0:
		return fmt.Errorf("%w: --max-sessions must be at least 1", ErrInvalidArgument)
	case len(o.rayAddress) > 255:
		return fmt.Errorf("%w: --ray-address too long", ErrInvalidArgument)
	case o.pullBudget < 0:
		return fmt.Errorf("%w: --pull-disk-budget-mb must not be negative", ErrInvalidArgument)
	case o.pullBudget > 0 && !o.acceptPulls:
		return fmt.Errorf("%w: --pull-disk-budget-mb needs --accept-pulls", ErrInvalidArgument)
	}
	return nil
}

func (app *App) runWorker(cmd *cobra.Command, o *workerOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	cfg, err := app.config(cmd, o.engine.override(cmd))
	if err != nil {
		return err
	}
	join, err := o.swarm.resolve(cfg, app.stdin)
	if err != nil {
		return err
	}
	listen, err := parseListen(o.listen)
	if err != nil {
		return err
	}
	if len(o.models) == 0 {
		o.models = []string{cfg.Node.Model}
	}
	// The IPFS node joins the swarm's private IPFS network and listens where
	// the worker does; its id and addresses go into the record.
	n, err := app.openNode(app.interrupt, cfg, localnode.WithSwarm(join.Secret[:], listen))
	if err != nil {
		return err
	}
	defer app.closeQuietly(n)
	models, info, err := app.prepareModels(n, o.models)
	if err != nil {
		return err
	}
	w, err := volunteer.Start(app.interrupt, n, volunteer.Options{
		DataDir: cfg.DataDir, Join: join, Listen: listen, NoMDNS: o.swarm.noMDNS, Models: models,
		PricePer1kMicros: uint64(math.Round(o.price * 1e6)), Region: o.label, MaxSessions: o.maxSessions,
		RayAddress: o.rayAddress, Refresh: o.refresh, RecordTTL: o.recordTTL, Logger: app.log,
		Publish: app.sharePublisher(cfg, n), AcceptPulls: o.acceptPulls,
		PullDiskBudgetBytes: uint64(o.pullBudget) << 20, Pull: app.requestedPull(cfg, o.pullBudget),
	})
	if err != nil {
		return networkError(err)
	}
	node := w.Node()
	// No join string here: stderr ends up in logs (swarm.go, swarm join-string).
	served := fmt.Sprintf("%s (%s)", info.GetId(), info.GetWeightsCid())
	if len(models) > 1 {
		served = fmt.Sprintf("%s (%s loaded, the others on demand)", strings.Join(models, ", "), info.GetId())
	}
	fmt.Fprintf(app.stderr, "Worker %s joined swarm %s, serving %s. Stop with Ctrl-C.\n"+
		"Others can join through this worker with the string `edgellm swarm join-string` prints.\n",
		node.ID(), join.Secret.ID(), served)
	<-app.interrupt.Done()
	fmt.Fprintln(app.stderr, "Leaving the swarm…")
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	w.Close(ctx)
	fmt.Fprintln(app.stderr, "Left the swarm.")
	return nil
}
