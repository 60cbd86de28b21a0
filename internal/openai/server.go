package openai

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
)

// Server is the OpenAI-compatible HTTP API over an Engine. It is an
// http.Handler; NewHTTPServer wraps it in an http.Server with timeouts.
type Server struct {
	engine  Engine
	opts    Options
	metrics *Metrics
	log     *slog.Logger
	queues  *queues
	mux     *http.ServeMux
	handler http.Handler
	// patterns lists the registered routes, for the test that checks the
	// OpenAPI document against them.
	patterns []string
}

// New builds the API over engine.
func New(engine Engine, opts Options) (*Server, error) {
	if engine == nil {
		return nil, fmt.Errorf("%w: nil Engine", ErrInvalidOption)
	}
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		engine:  engine,
		opts:    opts,
		metrics: opts.Metrics,
		log:     opts.Logger,
		queues:  newQueues(opts.MaxConcurrent, opts.MaxQueue, opts.Metrics),
		mux:     http.NewServeMux(),
	}
	doc, err := spec.json(opts)
	if err != nil {
		return nil, err
	}
	s.routes(doc)
	s.handler = s.metrics.instrument(http.HandlerFunc(s.dispatch))
	return s, nil
}

// routes registers every endpoint; openapi.yaml documents each of them
// (TestOpenAPIDocumentsEveryRoute keeps the two lists equal).
func (s *Server) routes(openapiDoc []byte) {
	s.route("POST /v1/chat/completions", s.auth(s.chatCompletions))
	s.route("POST /v1/completions", s.auth(s.completions))
	s.route("GET /v1/models", s.auth(s.listModels))
	// {id...}: a model id may one day contain "/" (hub-style names).
	s.route("GET /v1/models/{id...}", s.auth(s.retrieveModel))
	s.route("GET /health", s.health)
	s.route("GET /ready", s.ready)
	s.route("GET /metrics", s.metrics.Handler().ServeHTTP)
	s.route("GET /openapi.json", openapiHandler(openapiDoc))
}

// route registers h under pattern, labelled with the pattern in metrics.
func (s *Server) route(pattern string, h http.HandlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		infoFrom(r.Context()).endpoint = pattern
		h(w, r)
	})
}

// requestID makes a generation's id (prefix + random), which is also the
// backend's request id, and sets it as X-Request-Id, OpenAI's header for
// it: its clients expose it, and a 500's message and the log name it too.
func requestID(w http.ResponseWriter, prefix string) string {
	id := prefix + rand.Text()
	w.Header().Set("X-Request-Id", id)
	return id
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

// Metrics returns the server's metrics (Options.Metrics or its own).
func (s *Server) Metrics() *Metrics { return s.metrics }

// lookupModel finds the requested model among those the engine serves, so
// an unknown one is a 404 before it takes a queue slot. Only known ids
// become metric labels.
// ref names the request in a 500's message ("" for none).
func (s *Server) lookupModel(r *http.Request, id, ref string) (Model, *apiError) {
	models, err := s.engine.Models(r.Context())
	if err != nil {
		return Model{}, engineError(err, ref, s.opts.RetryAfter)
	}
	for _, m := range models {
		if m.ID == id {
			infoFrom(r.Context()).model = id
			return m, nil
		}
	}
	return Model{}, modelNotFound(id)
}
