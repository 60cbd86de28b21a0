package openai

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the node's Prometheus registry: the API's own series, which the
// server records, and node-wide ones that `edgellm serve` sets from outside
// (the exported fields). It uses its own registry, not the global one, so
// two servers in one process (tests) do not collide.
type Metrics struct {
	// Registry holds every series below plus the Go runtime and process
	// collectors; serve may register more.
	Registry *prometheus.Registry

	// OpenClusters is the number of open cluster sessions.
	OpenClusters prometheus.Gauge
	// PeersSeen is the number of swarm peers currently known.
	PeersSeen prometheus.Gauge
	// PrefixCacheHits counts prompts whose prefix KV came from the cache.
	PrefixCacheHits prometheus.Counter
	// BackendRestarts counts restarts of the Python backend.
	BackendRestarts prometheus.Counter
	// KuboRestarts counts restarts of the IPFS node.
	KuboRestarts prometheus.Counter

	requests         *prometheus.CounterVec   // endpoint, model, route, code
	promptTokens     *prometheus.CounterVec   // model
	cachedTokens     *prometheus.CounterVec   // model
	completionTokens *prometheus.CounterVec   // model
	ttft             *prometheus.HistogramVec // model, route
	itl              *prometheus.HistogramVec // model, route
	queueDepth       *prometheus.GaugeVec     // model
	running          *prometheus.GaugeVec     // model
	batch            *prometheus.HistogramVec // model, route
	holders          *holderTokens            // holder (bounded)
}

// Label values for requests that did not reach a model or the engine.
const (
	labelNone      = "none"      // no model named, or no engine route taken
	labelUnmatched = "unmatched" // no route of the API matched the path
)

// NewMetrics creates the series in a fresh registry.
func NewMetrics() *Metrics {
	f := factory{prometheus.NewRegistry()}
	m := &Metrics{
		Registry:        f.reg,
		OpenClusters:    f.gauge("edgellm_open_clusters", "Open cluster sessions."),
		PeersSeen:       f.gauge("edgellm_peers_seen", "Swarm peers currently known."),
		PrefixCacheHits: f.counter("edgellm_prefix_cache_hits_total", "Prompts whose prefix KV cache was reused."),
		BackendRestarts: f.counter("edgellm_backend_restarts_total", "Restarts of the Python backend."),
		KuboRestarts:    f.counter("edgellm_kubo_restarts_total", "Restarts of the IPFS (Kubo) node."),
		requests: f.counterVec("edgellm_http_requests_total",
			"HTTP requests by endpoint, model, engine route (local, pipeline, pd; none) and status code "+
				"(499: the client left before the answer started).", "endpoint", "model", "route", "code"),
		promptTokens:     f.counterVec("edgellm_prompt_tokens_total", "Prompt tokens processed.", "model"),
		cachedTokens:     f.counterVec("edgellm_cached_prompt_tokens_total", "Prompt tokens taken from the KV cache.", "model"),
		completionTokens: f.counterVec("edgellm_completion_tokens_total", "Completion tokens generated.", "model"),
		ttft: f.histogramVec("edgellm_time_to_first_token_seconds",
			"From the request's arrival (queueing included) to its first token.",
			prometheus.ExponentialBucketsRange(0.01, 60, 16), "model", "route"),
		itl: f.histogramVec("edgellm_inter_token_latency_seconds",
			"Between consecutive tokens of a generation.",
			prometheus.ExponentialBucketsRange(0.001, 10, 16), "model", "route"),
		queueDepth: f.gaugeVec("edgellm_queue_depth", "Requests waiting for a generation slot.", "model"),
		running:    f.gaugeVec("edgellm_requests_running", "Generations running.", "model"),
		batch: f.histogramVec("edgellm_decode_batch_size",
			"The most sequences one decode step of a generation ran with (continuous batching; 1: alone), "+
				"as its engine reports it.", []float64{1, 2, 3, 4, 6, 8, 12, 16, 32, 64}, "model", "route"),
		holders: newHolderTokens(f),
	}
	f.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// observeUsage adds a finished generation's token counts.
func (m *Metrics) observeUsage(model string, u usage) {
	m.promptTokens.WithLabelValues(model).Add(float64(u.PromptTokens))
	m.cachedTokens.WithLabelValues(model).Add(float64(u.PromptTokensDetails.CachedTokens))
	m.completionTokens.WithLabelValues(model).Add(float64(u.CompletionTokens))
}

// observeBatch records the largest decode batch a generation ran in, when
// its engine says (Timings.max_batch).
func (m *Metrics) observeBatch(model, route string, size uint32) {
	if size > 0 {
		m.batch.WithLabelValues(model, route).Observe(float64(size))
	}
}

// observeLatency records a generation's time to first token and the gaps
// between its tokens, once its route is known.
func (m *Metrics) observeLatency(model, route string, c *tokenClock) {
	if c.first.IsZero() {
		return
	}
	m.ttft.WithLabelValues(model, route).Observe(c.first.Sub(c.start).Seconds())
	itl := m.itl.WithLabelValues(model, route)
	for _, gap := range c.gaps {
		itl.Observe(gap.Seconds())
	}
}

// instrument counts every request the handler answers. The labels come from
// the request's info, which the handlers fill as they learn them.
func (m *Metrics) instrument(next http.Handler) http.Handler {
	label := func(get func(*requestInfo) string) promhttp.LabelValueFromCtx {
		return func(ctx context.Context) string { return get(infoFrom(ctx)) }
	}
	counted := promhttp.InstrumentHandlerCounter(
		m.requests, next,
		promhttp.WithLabelFromCtx("endpoint", label(func(i *requestInfo) string { return i.endpoint })),
		promhttp.WithLabelFromCtx("model", label(func(i *requestInfo) string { return i.model })),
		promhttp.WithLabelFromCtx("route", label(func(i *requestInfo) string { return i.route })),
	)
	return withInfo(counted)
}

// requestInfo collects a request's metric labels while it is served; the
// handlers set them and the instrumentation reads them at the end.
type requestInfo struct {
	endpoint, model, route string
}

type infoKey struct{}

func withInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := &requestInfo{endpoint: labelUnmatched, model: labelNone, route: labelNone}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
	})
}

// infoFrom returns the request's info; a throwaway one outside instrument
// (handlers tested on their own), so callers never check for nil.
func infoFrom(ctx context.Context) *requestInfo {
	if info, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return info
	}
	return &requestInfo{}
}

// tokenClock times one generation's tokens.
type tokenClock struct {
	start, first, last time.Time
	gaps               []time.Duration
}

// tick records that a response carrying tokens arrived at now.
func (c *tokenClock) tick(now time.Time) {
	if c.first.IsZero() {
		c.first = now
	} else {
		c.gaps = append(c.gaps, now.Sub(c.last))
	}
	c.last = now
}

// factory registers each series as it creates it.
type factory struct{ reg *prometheus.Registry }

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
