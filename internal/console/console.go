// Package console is the web page `edgellm serve` shows at "/": a chat that
// streams from the node's own OpenAI-compatible API, the swarm as this node
// sees it, and live figures. The page is plain HTML, CSS and JavaScript
// modules embedded in the binary (static/); nothing is built.
//
// Decisions:
//   - The page's data come from one JSON endpoint, GET /status, served next
//     to the API rather than in it (like /metrics, it is the node's view of
//     itself, not an OpenAI shape, so it is not in openapi.yaml). It needs
//     the API key when one is set, since it names peers and the last route.
//   - Its figures are read from the Prometheus registry /metrics serves
//     (Gather), sampled every few seconds into a short ring of snapshots;
//     there is no second set of counters. Rates and TTFT percentiles over a
//     window are differences between snapshots, as Prometheus' rate() and
//     histogram_quantile() would compute them.
//   - Peers are looked up in the background every refresh period, so a
//     status call never waits on the DHT; a peer that leaves is gone from
//     the page after the next lookup.
//   - The page renders every text it did not write itself (prompts,
//     answers, peer labels, error messages) with textContent, never
//     innerHTML, and keeps the API key in the tab only (sessionStorage).
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgellm/edgellm/internal/openai"
)

//go:embed static
var static embed.FS

// Options configure a Console.
type Options struct {
	// API is the OpenAI-compatible API every other path goes to. Required.
	API http.Handler
	// Metrics is the registry the figures are read from. Required.
	Metrics *openai.Metrics
	// APIKey, when set, is required (as a bearer token) by /status.
	APIKey string
	// Self names this node (its peer id, or "" without a swarm).
	Self string
	// Peers looks the swarm's workers up; nil without a swarm. It returns a
	// JSON-marshalable list, one object per peer (as `edgellm peers --json`).
	Peers func(ctx context.Context) any
	// Trace returns the latest generation's route; nil when not known.
	Trace func() (any, bool)
	// BlocksHeld counts the KV blocks this node's prefix cache holds (false
	// when the backend cannot say); nil when not known. Sampled with the
	// peers, every PeersEvery.
	BlocksHeld func(ctx context.Context) (int, bool)
	// Sample is the period of the metrics snapshots (default 2s) and
	// PeersEvery that of the peer lookups (default 5s).
	Sample, PeersEvery time.Duration
	// Window is how much history the figures keep (default 10 minutes).
	Window time.Duration
}

// Console serves the page, its assets and /status, and the API under them.
type Console struct {
	o       Options
	mux     *http.ServeMux
	history *history

	mu     sync.Mutex
	peers  any
	seen   time.Time // when peers were last looked up
	blocks *int      // KV blocks held at the last count; nil before one

	stop context.CancelFunc
	done sync.WaitGroup
}

// New builds the console and starts its samplers; Close stops them.
func New(o Options) *Console {
	if o.Sample <= 0 {
		o.Sample = 2 * time.Second
	}
	if o.PeersEvery <= 0 {
		o.PeersEvery = 5 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 10 * time.Minute
	}
	c := &Console{o: o, mux: http.NewServeMux(), history: newHistory(int(o.Window / o.Sample))}
	assets, _ := fs.Sub(static, "static")
	files := http.FileServerFS(assets)
	c.mux.Handle("GET /{$}", files) // index.html
	c.mux.Handle("GET /console/", http.StripPrefix("/console/", files))
	c.mux.HandleFunc("GET /status", c.auth(c.status))
	c.mux.Handle("/", o.API)

	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	c.every(ctx, o.Sample, func() { c.history.add(snapshot(o.Metrics.Registry, time.Now())) })
	if o.Peers != nil {
		c.every(ctx, o.PeersEvery, func() {
			lctx, cancel := context.WithTimeout(ctx, o.PeersEvery)
			defer cancel()
			peers := o.Peers(lctx)
			c.mu.Lock()
			c.peers, c.seen = peers, time.Now()
			c.mu.Unlock()
		})
	}
	if o.BlocksHeld != nil {
		c.every(ctx, o.PeersEvery, func() {
			lctx, cancel := context.WithTimeout(ctx, o.PeersEvery)
			defer cancel()
			if n, ok := o.BlocksHeld(lctx); ok {
				c.mu.Lock()
				c.blocks = &n
				c.mu.Unlock()
			}
		})
	}
	return c
}

// every runs f now and then every period until ctx ends.
func (c *Console) every(ctx context.Context, period time.Duration, f func()) {
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			f()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// ServeHTTP serves the console and, for every other path, the API.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// Close stops the samplers.
func (c *Console) Close() {
	c.stop()
	c.done.Wait()
}

// kvStatus is /status's view of the prefix cache.
type kvStatus struct {
	BlocksHeld int `json:"blocks_held"`
}

// statusBody is GET /status.
type statusBody struct {
	Self      string    `json:"self"`
	Now       time.Time `json:"now"`
	Swarm     bool      `json:"swarm"`
	Peers     any       `json:"peers"`
	PeersSeen time.Time `json:"peers_seen,omitzero"`
	// KV is this node's prefix cache: blocks held (absent before a count).
	KV     *kvStatus `json:"kv,omitempty"`
	Last   any       `json:"last"`
	Totals totals    `json:"totals"`
	Series []point   `json:"series"`
}

func (c *Console) status(w http.ResponseWriter, r *http.Request) {
	body := statusBody{Self: c.o.Self, Now: time.Now().UTC(), Swarm: c.o.Peers != nil, Peers: []any{}}
	c.mu.Lock()
	if c.peers != nil {
		body.Peers, body.PeersSeen = c.peers, c.seen.UTC()
	}
	if c.blocks != nil {
		body.KV = &kvStatus{BlocksHeld: *c.blocks}
	}
	c.mu.Unlock()
	if c.o.Trace != nil {
		if t, ok := c.o.Trace(); ok {
			body.Last = t
		}
	}
	now := snapshot(c.o.Metrics.Registry, time.Now())
	body.Totals = now.totals()
	body.Series = c.history.series(time.Minute)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

// auth requires the API key, when set, as openai's endpoints do (same 401
// body, so the page handles both alike).
func (c *Console) auth(next http.HandlerFunc) http.HandlerFunc {
	if c.o.APIKey == "" {
		return next
	}
	want := []byte(c.o.APIKey)
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Www-Authenticate", `Bearer realm="edgellm"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"message":"Incorrect or missing API key.","type":"invalid_request_error",` +
				`"param":null,"code":"invalid_api_key"}}` + "\n"))
			return
		}
		next(w, r)
	}
}
