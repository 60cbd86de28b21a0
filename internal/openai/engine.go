package openai

import (
	"context"
	"errors"
	"time"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Engine is what the API serves from; `edgellm serve` implements it over the
// local backend and the swarm.
type Engine interface {
	// Models lists every model this node can serve, here or through the
	// swarm. It is called once per generation request (to answer 404 before
	// queueing) and per /v1/models call, so it should answer from a cache.
	Models(ctx context.Context) ([]Model, error)

	// Generate runs one generation. onResp gets every streamed backend
	// response in order (text, token ids; the last one has finish_reason,
	// usage with cached_prompt_tokens, and timings), one call at a time and
	// none after Generate returns (it writes to the HTTP response). When
	// onResp returns an error, Generate stops and returns it (wrapped or
	// not). Generate returns the route it took (RouteLocal, RoutePipeline,
	// RoutePD) for metrics, also with an error when it got that far.
	//
	// Errors carry gRPC status codes (status.Code sees through %w):
	// INVALID_ARGUMENT (bad input, prompt beyond the context window,
	// max_tokens too large), NOT_FOUND, RESOURCE_EXHAUSTED, UNAVAILABLE (no
	// peer can serve the model, backend down), CANCELLED; or wrap
	// ErrNoCapacity. Cancelling ctx must abort the generation (the
	// implementation sends the backend's Abort for req.RequestId).
	Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) (route string, err error)

	// Ready is nil once the backend is up and every served model is warmed;
	// otherwise its error says what is missing.
	Ready(ctx context.Context) error
}

// Model is one model the node can serve.
type Model struct {
	// ID is the short model id requests name, e.g. "smollm2-135m".
	ID string
	// WeightsCID pins the weights by content; responses carry it as
	// system_fingerprint.
	WeightsCID   string
	Architecture string
	// ContextLength is the context window in tokens; 0 when unknown (then
	// only the backend checks max_tokens against it).
	ContextLength int
	NumLayers     int
	// Created is when the model entered the node's store; zero is reported
	// as 0 (the Unix epoch is not claimed).
	Created time.Time
	// Where lists "local" and/or the peer ids that serve the model.
	Where []string
}

// Routes an Engine reports from Generate (the "route" metrics label).
const (
	RouteLocal    = "local"
	RoutePipeline = "pipeline"
	RoutePD       = "pd"
)

// ErrNoCapacity is what an Engine wraps when the model exists but no peer
// (local or in the swarm) has room to run it now; the API answers 503.
var ErrNoCapacity = errors.New("no capacity to serve the model")
