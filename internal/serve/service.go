package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/openai"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Swarm is what a serve in a swarm uses to reach it; nil without a swarm.
type Swarm struct {
	// Requester plans and forms clusters over the swarm.
	Requester *requester.Requester
	// Plan holds the plan's limits for models served through the swarm
	// (stages, price, latency, P/D peers); Model is set per request.
	Plan requester.Request
	// Index and IPFS find and reach a prompt's cached prefix in the swarm
	// before a local prefill (IPFS nil turns that lookup off); Index alone
	// before a swarm generation, whose stages fetch the blocks themselves.
	Index requester.PrefixIndex
	IPFS  requester.IPFSNode
	// Local lists the models this node runs itself although it is in a swarm
	// (the models it volunteers, or every model with --local).
	Local []string
	// ClusterIdle closes a warm cluster unused this long. Default
	// DefaultClusterIdle.
	ClusterIdle time.Duration
}

// Options configure a Service.
type Options struct {
	// Backend is this node's backend: the local engine, the Ray head of
	// swarm clusters and the prompt keyer of the prefix lookup.
	Backend backend.Backend
	// BackendRunning, when set, says without waiting whether the backend
	// serves now; Ready is not nil while it does not (a restart).
	BackendRunning func() bool
	// Models are the models served: warmed before Ready. Required.
	Models []string
	// Swarm, when set, routes the models not in Swarm.Local through it.
	Swarm *Swarm
	// Metrics receives the node-wide series (clusters, prefix-cache hits).
	Metrics *openai.Metrics
	Logger  *slog.Logger
}

// Service routes generations to this node's backend or the swarm; it
// implements openai.Engine.
type Service struct {
	o        Options
	log      *slog.Logger
	clusters *clusterPool // nil without a swarm
	// distrust: holders whose KV blocks failed the backend's spot check, not
	// asked again while this node serves.
	distrust requester.Distrust

	mu      sync.Mutex
	models  []openai.Model // the served models, once warmed
	warmErr error          // why Ready is not nil yet
	last    Trace          // the latest generation's route (zero before one)
}

// Trace says where one generation ran: on this node ("local") or on the
// stages of a swarm cluster, for the console's "which peers ran it".
type Trace struct {
	RequestID string
	Model     string
	Route     string            // openai.RouteLocal, RoutePipeline or RoutePD
	Stages    []requester.Stage // the cluster's stages in order; none for local
	At        time.Time
}

// LastTrace returns the latest generation's trace (ok false before any).
func (s *Service) LastTrace() (Trace, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.last.RequestID != ""
}

func (s *Service) setTrace(t Trace) {
	t.At = time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = t
}

var _ openai.Engine = (*Service)(nil)

// New builds the service; Warm makes it ready.
func New(o Options) (*Service, error) {
	if o.Backend == nil || len(o.Models) == 0 {
		return nil, errors.New("serve: a backend and at least one model are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = openai.NewMetrics()
	}
	s := &Service{o: o, log: o.Logger, warmErr: errors.New("warming up")}
	if sw := o.Swarm; sw != nil {
		idle := sw.ClusterIdle
		if idle <= 0 {
			idle = DefaultClusterIdle
		}
		s.clusters = &clusterPool{former: requesterFormer{r: sw.Requester, head: o.Backend}, template: sw.Plan, idle: idle,
			log: o.Logger, onOpen: func(open bool) {
				if open {
					o.Metrics.OpenClusters.Inc()
				} else {
					o.Metrics.OpenClusters.Dec()
				}
			}}
		s.clusters.onStages = func(req *pb.GenerateRequest, stages []requester.Stage) {
			s.setTrace(Trace{RequestID: req.GetRequestId(), Model: req.GetModel(), Route: routeOfStages(stages), Stages: stages})
		}
	}
	return s, nil
}

// runsHere reports whether model runs on this node's backend.
func (s *Service) runsHere(model string) bool {
	return s.o.Swarm == nil || slices.Contains(s.o.Swarm.Local, model)
}

// Warm loads every served model (and generates one token with it) on this
// node's backend, or forms its cluster once for a model served through the
// swarm; then Ready is nil. The models' descriptions come from the backend's
// store (the requester needs the tokenizer and config even for a split).
func (s *Service) Warm(ctx context.Context) error {
	var models []openai.Model
	for _, id := range s.o.Models {
		info, err := s.warmOne(ctx, id)
		if err != nil {
			s.setWarm(nil, err)
			return err
		}
		where := []string{"local"}
		if !s.runsHere(id) {
			where = []string{"swarm"}
		}
		models = append(models, openai.Model{ID: info.GetId(), WeightsCID: info.GetWeightsCid(),
			Architecture: info.GetArchitecture(), ContextLength: int(info.GetContextLength()),
			NumLayers: int(info.GetNumLayers()), Where: where})
	}
	s.setWarm(models, nil)
	return nil
}

// warmOne loads a model on this node's backend (for a swarm model, the
// tokenizer and config the driver needs) and generates one token on its
// route, so the first request finds the weights loaded, the engine's code
// paths compiled and, through the swarm, the cluster formed.
func (s *Service) warmOne(ctx context.Context, id string) (*pb.ModelInfo, error) {
	info, err := s.o.Backend.LoadModel(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", id, err)
	}
	one := int32(1)
	req := &pb.GenerateRequest{RequestId: "serve-warmup-" + id, Model: id,
		Input: &pb.GenerateRequest_RawPrompt{RawPrompt: "Hello"}, Sampling: &pb.SamplingParams{MaxTokens: &one}}
	discard := func(*pb.GenerateResponse) error { return nil }
	if s.runsHere(id) {
		err = s.o.Backend.Generate(ctx, req, discard)
	} else {
		_, err = s.clusters.generate(ctx, req, requester.Prefix{}, discard)
	}
	if err != nil {
		return nil, fmt.Errorf("warm %s up: %w", id, err)
	}
	return info, nil
}

func (s *Service) setWarm(models []openai.Model, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.models, s.warmErr = models, err
}

// Ready implements openai.Engine: nil once warmed and while the backend
// answers (a backend restarting makes /ready 503 until it is back).
func (s *Service) Ready(context.Context) error {
	s.mu.Lock()
	err := s.warmErr
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Asked without waiting: a busy backend answers a status call late, and
	// one that restarts would answer only once it is back.
	if s.o.BackendRunning != nil && !s.o.BackendRunning() {
		return errors.New("the backend is restarting")
	}
	return nil
}

// Models implements openai.Engine: the served models (after Warm).
func (s *Service) Models(context.Context) ([]openai.Model, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.models), nil
}

// Served returns the served models with their weights CIDs (for the record).
func (s *Service) Served() []RecordModel {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RecordModel, 0, len(s.models))
	for _, m := range s.models {
		out = append(out, RecordModel{ID: m.ID, WeightsCID: m.WeightsCID})
	}
	return out
}

// Generate implements openai.Engine: a served model runs here (after a
// prefix lookup in the swarm) or across the swarm's workers.
func (s *Service) Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (string, error) {
	if !slices.Contains(s.o.Models, req.GetModel()) {
		return openai.RouteLocal, status.Errorf(codes.NotFound, "model %q is not served by this node", req.GetModel())
	}
	if !s.runsHere(req.GetModel()) {
		prefix := s.lookupPrefix(ctx, req)
		route, err := s.clusters.generate(ctx, req, prefix, s.countHits(s.distrustBad(prefix, onResp), prefix.HolderIDs()))
		return route, swarmStatus(err)
	}
	s.setTrace(Trace{RequestID: req.GetRequestId(), Model: req.GetModel(), Route: openai.RouteLocal})
	prefix := s.fillPrefix(ctx, req)
	err := generateOn(ctx, s.o.Backend, req, s.countHits(s.distrustBad(prefix, onResp), prefix.HolderIDs()))
	return openai.RouteLocal, err
}

// GenerateStatus is Generate for the Inference socket (`edgellm infer`
// through serve): every refusal carries its gRPC status, so infer exits as it
// would against a backend; no capacity is UNAVAILABLE.
func (s *Service) GenerateStatus(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	_, err := s.Generate(ctx, req, onResp)
	if errors.Is(err, openai.ErrNoCapacity) {
		return status.Error(codes.Unavailable, err.Error())
	}
	return err
}

// fillPrefix looks the prompt's prefix up in the swarm (never asking a
// distrusted holder) and hands the backend the holder's manifest; a failed
// lookup costs nothing but the lookup.
func (s *Service) fillPrefix(ctx context.Context, req *pb.GenerateRequest) requester.Prefix {
	sw := s.o.Swarm
	if sw == nil || sw.IPFS == nil || sw.Index == nil || req.GetNoPrefixCache() {
		return requester.Prefix{}
	}
	prefix, err := requester.CachedPrefix(ctx, sw.Index, s.o.Backend, sw.IPFS, req, &s.distrust)
	if err != nil {
		s.log.Debug("no cached prefix from the swarm", "request", req.GetRequestId(), "err", err)
		return requester.Prefix{}
	}
	req.KvManifest = prefix.Manifest
	s.log.Info("cached prefix found", "request", req.GetRequestId(), "holder", prefix.Holder, "blocks", prefix.Blocks)
	return prefix
}

// distrustBad stops asking the holders of prefix whose blocks the backend
// says failed its spot check, for as long as this node serves.
func (s *Service) distrustBad(prefix requester.Prefix, onResp func(*pb.GenerateResponse) error) func(*pb.GenerateResponse) error {
	return func(r *pb.GenerateResponse) error {
		for _, p := range s.distrust.Report(prefix, r) {
			s.log.Warn("kv: cached blocks failed the spot check; not asking their holder again",
				"request", r.GetRequestId(), "holder", p)
		}
		return onResp(r)
	}
}

// lookupPrefix is KV-aware routing for a swarm generation, as infer's
// (requester.LookupPrefix): the stages get the manifest of the prompt's
// cached prefix in req, and a cluster formed for req ranks the holders
// higher (clusterPool.generate). A miss is a zero Prefix but for the
// prompt's length; it costs the request nothing but the lookup.
func (s *Service) lookupPrefix(ctx context.Context, req *pb.GenerateRequest) requester.Prefix {
	if s.o.Swarm.Index == nil {
		return requester.Prefix{}
	}
	prefix, err := requester.LookupPrefix(ctx, s.o.Swarm.Index, s.o.Backend, req, &s.distrust)
	if err != nil {
		s.log.Debug("no cached prefix from the swarm", "request", req.GetRequestId(), "err", err)
		return prefix
	}
	s.log.Info("cached prefix found", "request", req.GetRequestId(), "holders", prefix.HolderIDs(), "blocks", prefix.Blocks)
	return prefix
}

// countHits counts a generation whose prompt came partly from the cache,
// and its cached tokens by the holders the lookup found (none: the
// backend's own cache or a stage's own store).
func (s *Service) countHits(onResp func(*pb.GenerateResponse) error, holders []string) func(*pb.GenerateResponse) error {
	return func(r *pb.GenerateResponse) error {
		if n := r.GetUsage().GetCachedPromptTokens(); n > 0 {
			s.o.Metrics.PrefixCacheHits.Inc()
			s.o.Metrics.AddCachedFrom(holders, int(n))
		}
		return onResp(r)
	}
}

// swarmStatus gives the requester's refusals the gRPC codes the API and the
// socket answer with: the swarm's "no worker serves it" is a 503 (the model
// is served here, its workers are gone), a bad plan a 400.
func swarmStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, requester.ErrInvalidRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, requester.ErrNotFound), errors.Is(err, requester.ErrUnavailable):
		return fmt.Errorf("%w: %w", openai.ErrNoCapacity, err)
	case errors.Is(err, requester.ErrCancelled):
		return status.Error(codes.Canceled, err.Error())
	}
	return err
}

// BackendRestarted drops the warm cluster: the backend that headed it lost
// its Ray head when it died, so the next swarm request forms a new cluster.
// Call it from the backend's restart hook.
func (s *Service) BackendRestarted() {
	if s.clusters != nil {
		s.clusters.close()
	}
}

// Close closes the warm cluster, if any; the backend is the caller's.
func (s *Service) Close() {
	if s.clusters != nil {
		s.clusters.close()
	}
}
