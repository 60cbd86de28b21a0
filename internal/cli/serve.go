package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/inferencerpc"
	"github.com/edgellm/edgellm/internal/localnode"
	"github.com/edgellm/edgellm/internal/openai"
	"github.com/edgellm/edgellm/internal/requester"
	"github.com/edgellm/edgellm/internal/serve"
	"github.com/edgellm/edgellm/internal/volunteer"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

const serveLong = `Run this machine as a long-running node with an OpenAI-compatible HTTP API.

serve starts the node once (backend, IPFS node, and with a swarm configured its
swarm membership), warms every served model (loads it and generates one token),
then answers until SIGINT or SIGTERM:

  POST /v1/chat/completions, POST /v1/completions   (streamed with "stream": true)
  GET  /v1/models, /v1/models/{id}
  GET  /health, /ready, /metrics (Prometheus), /openapi.json
  GET  /  (a web console: chat, the swarm, live figures), /status (its JSON)

Requests are routed as infer routes them: without a swarm (or with --local)
every model runs on this machine; with one, a model this node volunteers
(--worker) runs here after a look for its prompt's prefix in the swarm's KV
cache, and any other model runs across the swarm's workers. A formed cluster
stays warm between requests (--cluster-idle-timeout), so the next request to
a split model pays no Ray start or joins.

Each model has a first-come-first-served queue: up to backend.max_batch
generations run at once (the backend, or the swarm cluster's head, decodes
them as one batch) and at most --max-queue wait; beyond that
a request gets 429 with Retry-After.

With --api-key-file (or EDGELLM_API_KEY) every /v1/ request must carry
"Authorization: Bearer <key>". Listening beyond loopback without a key prints
a warning. While it runs, serve writes <data-dir>/run/serve.json (its URL,
pid and models) and serves <data-dir>/run/serve.sock, through which
'edgellm infer' on the same data directory sends its requests instead of
starting a backend of its own.

SIGTERM or Ctrl-C stops accepting, lets requests in flight finish (at most
--shutdown-grace), closes clusters, and stops the backend and IPFS node.`

// serveOptions are the serve command's flags.
type serveOptions struct {
	engine       engineFlag
	swarm        swarmFlags
	listen       string
	p2pListen    []string
	models       []string
	apiKeyFile   string
	worker       bool
	maxQueue     int
	maxTokens    int
	local        bool
	stages       int
	maxPrice     float64
	trusted      []string
	maxLatency   time.Duration
	rayAddress   string
	discoverFor  time.Duration
	clusterIdle  time.Duration
	shutdownWait time.Duration
}

func newServeCommand(app *App) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve [--listen 127.0.0.1:8080] [--model ID ...] [--api-key-file F] [--worker]",
		Short: "Serve an OpenAI-compatible API from this node",
		Long:  serveLong,
		Example: `  edgellm serve
  edgellm serve --listen 0.0.0.0:8080 --api-key-file ~/.edgellm-key --worker
  curl -s localhost:8080/v1/chat/completions -d '{"model":"smollm2-135m","messages":[{"role":"user","content":"Hi"}]}'`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return app.runServe(cmd, o) },
	}
	o.swarm.register(cmd)
	o.engine.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "HTTP listen address (host:port; port 0 picks a free one)")
	f.StringSliceVar(&o.p2pListen, "p2p-listen", nil, "swarm listen multiaddrs, comma-separated (default /ip4/0.0.0.0/tcp/0,/ip6/::/tcp/0)")
	f.StringArrayVar(&o.models, "model", nil, `model to serve; repeat for several, or "all" for every model in the store (default $EDGELLM_MODEL, else node.model)`)
	f.StringVar(&o.apiKeyFile, "api-key-file", "", "file holding the API key clients must send as a bearer token (or $EDGELLM_API_KEY)")
	f.BoolVar(&o.worker, "worker", false, "also volunteer this machine to the swarm, as edgellm worker does")
	f.IntVar(&o.maxQueue, "max-queue", openai.DefaultMaxQueue, "requests per model that may wait; more get 429")
	f.IntVar(&o.maxTokens, "max-completion-tokens", 0, "most tokens one request may generate (0 = the context window)")
	f.BoolVar(&o.local, "local", false, "run every model on this machine even when a swarm is configured")
	f.IntVar(&o.stages, "stages", 0, "split swarm models across this many workers (0 = auto)")
	f.Float64Var(&o.maxPrice, "max-price", 0, "most credits per 1000 tokens a swarm plan may cost (0 = no limit)")
	f.DurationVar(&o.maxLatency, "max-latency", 0, "most expected latency per token of a swarm plan (0 = no limit)")
	f.StringVar(&o.rayAddress, "ray-address", "", "IP the workers reach this machine's Ray head on (default: its first non-loopback IPv4)")
	f.DurationVar(&o.discoverFor, "discover-timeout", 10*time.Second, "longest time to look for workers")
	registerTrustedPeers(f, &o.trusted)
	f.DurationVar(&o.clusterIdle, "cluster-idle-timeout", serve.DefaultClusterIdle, "close a warm swarm cluster unused this long")
	f.DurationVar(&o.shutdownWait, "shutdown-grace", 30*time.Second, "how long requests in flight may take to finish on SIGTERM")
	return cmd
}

func (o *serveOptions) validate() error {
	host, _, err := net.SplitHostPort(o.listen)
	switch {
	case err != nil:
		return fmt.Errorf("%w: --listen %q: %w", ErrInvalidArgument, o.listen, err)
	case host == "":
		return fmt.Errorf("%w: --listen %q: name the host (0.0.0.0 for every interface)", ErrInvalidArgument, o.listen)
	case o.maxQueue < 0:
		return fmt.Errorf("%w: --max-queue must not be negative", ErrInvalidArgument)
	case o.maxTokens < 0:
		return fmt.Errorf("%w: --max-completion-tokens must not be negative", ErrInvalidArgument)
	case o.stages < 0 || o.stages > 1024:
		return fmt.Errorf("%w: --stages must be between 0 and 1024", ErrInvalidArgument)
	case o.maxPrice < 0 || o.maxPrice > 1e9 || o.maxPrice != o.maxPrice:
		return fmt.Errorf("%w: --max-price must be between 0 and 1e9", ErrInvalidArgument)
	case o.maxLatency < 0 || o.discoverFor <= 0 || o.clusterIdle <= 0 || o.shutdownWait <= 0:
		return fmt.Errorf("%w: durations must be positive", ErrInvalidArgument)
	case o.rayAddress != "" && net.ParseIP(o.rayAddress) == nil:
		return fmt.Errorf("%w: --ray-address must be an IP address", ErrInvalidArgument)
	case checkTrustedPeers(o.trusted) != nil:
		return checkTrustedPeers(o.trusted)
	case o.local && o.worker:
		return fmt.Errorf("%w: --local and --worker cannot be combined (a worker is in the swarm)", ErrUsage)
	}
	return nil
}

// apiKey reads the key from --api-key-file, else $EDGELLM_API_KEY; "" when
// neither is set.
func (o *serveOptions) apiKey() (string, error) { return readAPIKey(o.apiKeyFile) }

// readAPIKey reads the key from file (--api-key-file), else
// $EDGELLM_API_KEY; "" when neither is set.
func readAPIKey(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("EDGELLM_API_KEY")), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%w: --api-key-file: %w", ErrInvalidArgument, err)
	}
	key := strings.TrimSpace(string(data))
	if key == "" || strings.ContainsAny(key, " \t\r\n") {
		return "", fmt.Errorf("%w: --api-key-file %s must hold one key on one line", ErrInvalidArgument, file)
	}
	return key, nil
}

// runServe starts the node, warms its models, serves until SIGINT/SIGTERM
// and stops everything it started.
func (app *App) runServe(cmd *cobra.Command, o *serveOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	key, err := o.apiKey()
	if err != nil {
		return err
	}
	cfg, err := app.config(cmd, o.engine.override(cmd))
	if err != nil {
		return err
	}
	if len(o.models) == 0 {
		o.models = []string{cfg.Node.Model}
	}
	if rec, err := serve.Running(cfg.DataDir); err == nil {
		return fmt.Errorf("%w: a serve (pid %d, %s) already runs on %s", ErrUsage, rec.PID, rec.URL, cfg.DataDir)
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %s: %w", ErrInvalidArgument, o.listen, err)
	}
	defer lis.Close()
	if key == "" && !isLoopback(lis.Addr()) {
		app.warn(fmt.Sprintf("serving on %s without an API key: anyone who reaches it can use it (--api-key-file)", lis.Addr()))
	}
	metrics := openai.NewMetrics()
	var svcRef atomic.Pointer[serve.Service] // set below; the restart hook may run before
	onBackendRestart := func() {
		metrics.BackendRestarts.Inc()
		if svc := svcRef.Load(); svc != nil {
			go svc.BackendRestarted() // the hook runs in the supervisor: do not block its restart
		}
	}
	n, err := app.startServeNode(cfg, o, localnode.WithRestarts(onBackendRestart, metrics.KuboRestarts.Inc))
	if err != nil {
		return err
	}
	defer n.close()
	stopCounting := countPeers(n.p2p, metrics)
	defer stopCounting()
	svc, err := serve.New(serve.Options{Backend: n.local, BackendRunning: n.local.Running, Models: o.models,
		Swarm: n.swarm, Metrics: metrics, Logger: app.log})
	if err != nil {
		return err
	}
	defer svc.Close()
	svcRef.Store(svc)
	// Up to backend.max_batch generations of a model run at once: the backend
	// decodes them as one batch. (A swarm model's cluster still runs one at a
	// time: the others wait in its pool, internal/serve/clusters.go.)
	api, err := openai.New(svc, openai.Options{APIKey: key, MaxQueue: o.queue(), MaxConcurrent: cfg.MaxBatch(), Metrics: metrics, Logger: app.log,
		MaxCompletionTokens: o.maxTokens, ModelIDs: o.models})
	if err != nil {
		return err
	}
	httpSrv := api.NewHTTPServer(lis.Addr().String())
	con := newConsole(api, metrics, key, n.p2p, svc, n.local) // the page at "/" in front of the API
	defer con.Close()
	httpSrv.Handler = con
	served := make(chan error, 1)
	go func() { served <- httpSrv.Serve(lis) }()
	rpc, sock, err := serveSocket(cfg.DataDir, svc)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	if err := app.warmUp(svc, o.models); err != nil {
		inferencerpc.Stop(rpc.grpc, 0)
		return err
	}
	url := "http://" + lis.Addr().String()
	rec := &serve.Record{PID: os.Getpid(), URL: url, Socket: sock, Models: svc.Served(), Started: time.Now().UTC()}
	if err := serve.WriteRecord(cfg.DataDir, rec); err != nil {
		inferencerpc.Stop(rpc.grpc, 0)
		return fmt.Errorf("write the serve record: %w", err)
	}
	defer serve.RemoveRecord(cfg.DataDir)
	fmt.Fprintf(app.stderr, "edgellm: serving %s on %s (models %s). Stop with Ctrl-C.\n", routeWord(n.swarm), url, strings.Join(o.models, ", "))
	select {
	case <-app.interrupt.Done():
	case err := <-served:
		app.log.Error("HTTP server stopped", "err", err)
	}
	fmt.Fprintln(app.stderr, "edgellm: stopping: finishing requests in flight…")
	serve.RemoveRecord(cfg.DataDir) // nobody new finds it
	ctx, cancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer cancel()
	if err := openai.Shutdown(ctx, httpSrv); err != nil {
		app.log.Warn("HTTP shutdown", "err", err)
	}
	inferencerpc.Stop(rpc.grpc, time.Until(deadlineOf(ctx)))
	rpc.server.Shutdown()
	return nil
}

// queue is --max-queue in openai.Options' terms (0 there means the default).
func (o *serveOptions) queue() int {
	if o.maxQueue == 0 {
		return -1 // none may wait
	}
	return o.maxQueue
}

// warmUp loads and warms every served model, showing a status line on a
// terminal; Ctrl-C ends it.
func (app *App) warmUp(svc *serve.Service, models []string) error {
	line := newStatusLine(app.stderr)
	defer line.clear()
	line.draw("warming " + strings.Join(models, ", ") + "…")
	if err := svc.Warm(app.interrupt); err != nil {
		if app.interrupt.Err() != nil {
			return fmt.Errorf("%w: while warming the models", ErrInterrupted)
		}
		return err
	}
	return nil
}

// rpcSocket is the Inference service on the data directory's socket.
type rpcSocket struct {
	grpc   *grpc.Server
	server *inferencerpc.Server
}

// serveSocket serves svc's routing as the Inference gRPC service on
// <data-dir>/run/serve.sock, for `edgellm infer`.
func serveSocket(dataDir string, svc *serve.Service) (*rpcSocket, string, error) {
	if err := os.MkdirAll(serve.RunDir(dataDir), 0o700); err != nil {
		return nil, "", fmt.Errorf("run directory: %w", err)
	}
	sock := filepath.Join(serve.RunDir(dataDir), serve.SocketFile)
	lis, err := inferencerpc.ListenUnix(sock)
	if err != nil {
		return nil, "", err
	}
	s := &rpcSocket{grpc: grpc.NewServer(), server: inferencerpc.New(svc.GenerateStatus)}
	pb.RegisterInferenceServer(s.grpc, s.server)
	go s.grpc.Serve(lis)
	return s, sock, nil
}

// serveNode is what serve runs on: this machine's backend and IPFS node,
// and in a swarm its p2p node (a worker's, with --worker) and requester.
type serveNode struct {
	local   *localnode.Node
	p2p     *p2p.Node    // nil without a swarm
	swarm   *serve.Swarm // nil without a swarm
	closers []func()     // in reverse order
}

func (n *serveNode) close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
}

// startServeNode opens the backend and IPFS node and, with a swarm
// configured and no --local, joins it (as a worker with --worker).
func (app *App) startServeNode(cfg *config.Config, o *serveOptions, opts ...localnode.Option) (_ *serveNode, err error) {
	n := &serveNode{}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	inSwarm := !o.local && (o.swarm.given() || fileExists(filepath.Join(cfg.DataDir, joinFile)))
	if !inSwarm {
		if o.worker {
			return nil, fmt.Errorf("%w: --worker needs a swarm (--join, or edgellm swarm init)", ErrUsage)
		}
		n.local, err = app.openNode(app.interrupt, cfg, opts...)
		if err != nil {
			return nil, err
		}
		n.closers = append(n.closers, func() { app.closeQuietly(n.local) })
		return n, app.expandAllModels(n.local, o)
	}
	join, err := o.swarm.resolve(cfg, app.stdin)
	if err != nil {
		return nil, err
	}
	listen, err := parseListen(o.p2pListen)
	if err != nil {
		return nil, err
	}
	n.local, err = app.openNode(app.interrupt, cfg, append(opts, localnode.WithSwarm(join.Secret[:], listen))...)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { app.closeQuietly(n.local) })
	if err := app.expandAllModels(n.local, o); err != nil {
		return nil, err
	}
	node, err := app.serveP2P(cfg, o, n, join, listen)
	if err != nil {
		return nil, err
	}
	n.p2p = node
	swarm, err := requester.NewSwarm(node, app.log)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { swarm.Close() })
	n.swarm = &serve.Swarm{
		Requester: requester.New(swarm, requester.WithLogger(app.log)),
		Plan: requester.Request{Stages: o.stages, MaxTokenLatency: o.maxLatency,
			MaxPricePer1kMicros: uint64(o.maxPrice*1e6 + 0.5), DiscoverTimeout: o.discoverFor, RayAddress: o.rayAddress,
			TrustedPeers: strings.Join(o.trusted, ",")},
		Index: swarm, ClusterIdle: o.clusterIdle,
	}
	if ipfs := n.local.IPFS(); ipfs != nil {
		n.swarm.IPFS = ipfs
	}
	if o.worker {
		n.swarm.Local = slices.Clone(o.models) // what it volunteers runs here
	}
	return n, nil
}

// serveP2P is serve's p2p node: a worker's (persistent identity, record,
// cluster joins) with --worker, else a client's with a throwaway identity.
func (app *App) serveP2P(cfg *config.Config, o *serveOptions, n *serveNode, join p2p.Join, listen []ma.Multiaddr) (*p2p.Node, error) {
	if !o.worker {
		node, err := app.clientNode(join, listen, o.swarm.noMDNS, o.discoverFor)
		if err != nil {
			return nil, err
		}
		n.closers = append(n.closers, func() { node.Close() })
		return node, nil
	}
	for _, m := range o.models {
		if _, err := app.loadModel(app.interrupt, n.local, m); err != nil {
			return nil, err
		}
	}
	w, err := volunteer.Start(app.interrupt, n.local, volunteer.Options{DataDir: cfg.DataDir, Join: join,
		Listen: listen, NoMDNS: o.swarm.noMDNS, RayAddress: o.rayAddress, Logger: app.log, Models: o.models,
		Publish: app.sharePublisher(cfg, n.local)})
	if err != nil {
		return nil, networkError(err)
	}
	n.closers = append(n.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
		defer cancel()
		w.Close(ctx)
	})
	return w.Node(), nil
}

// peersEvery is how often serve samples the peers it is connected to.
const peersEvery = 5 * time.Second

// countPeers keeps the peers-seen gauge at the number of swarm members node
// is connected to; stop ends it. Without a swarm the gauge stays 0.
func countPeers(node *p2p.Node, m *openai.Metrics) (stop func()) {
	if node == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(peersEvery)
		defer t.Stop()
		for {
			m.PeersSeen.Set(float64(len(node.Host().Network().Peers())))
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done) }
}

// isLoopback reports whether a listener is on a loopback address only.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

func routeWord(sw *serve.Swarm) string {
	if sw == nil {
		return "this machine"
	}
	return "the swarm"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// deadlineOf is ctx's deadline (now when it has none).
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now()
}
