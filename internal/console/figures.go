package console

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// snap is one reading of the registry: the series the page shows, summed
// over their labels.
type snap struct {
	at               time.Time
	requests         float64 // generation requests answered (chat and text completions)
	completionTokens float64
	promptTokens     float64
	cachedTokens     float64
	prefixHits       float64
	queue, running   float64
	openClusters     float64
	peersSeen        float64
	backendRestarts  float64
	ttftCount        float64
	ttft             []bucket // cumulative, by upper bound, +Inf last
}

type bucket struct{ le, count float64 }

// snapshot gathers reg (what /metrics serves) into a snap.
func snapshot(reg prometheus.Gatherer, at time.Time) snap {
	s := snap{at: at}
	families, _ := reg.Gather() // a partial gather still has what it could read
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "edgellm_http_requests_total":
				if strings.Contains(label(m, "endpoint"), "completions") {
					s.requests += m.GetCounter().GetValue()
				}
			case "edgellm_completion_tokens_total":
				s.completionTokens += m.GetCounter().GetValue()
			case "edgellm_prompt_tokens_total":
				s.promptTokens += m.GetCounter().GetValue()
			case "edgellm_cached_prompt_tokens_total":
				s.cachedTokens += m.GetCounter().GetValue()
			case "edgellm_prefix_cache_hits_total":
				s.prefixHits += m.GetCounter().GetValue()
			case "edgellm_queue_depth":
				s.queue += m.GetGauge().GetValue()
			case "edgellm_requests_running":
				s.running += m.GetGauge().GetValue()
			case "edgellm_open_clusters":
				s.openClusters += m.GetGauge().GetValue()
			case "edgellm_peers_seen":
				s.peersSeen += m.GetGauge().GetValue()
			case "edgellm_backend_restarts_total":
				s.backendRestarts += m.GetCounter().GetValue()
			case "edgellm_time_to_first_token_seconds":
				h := m.GetHistogram()
				s.ttftCount += float64(h.GetSampleCount())
				s.ttft = addBuckets(s.ttft, h)
			}
		}
	}
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// addBuckets adds h's cumulative buckets to sum (same bounds: one histogram
// vector), with a +Inf bucket holding the sample count.
func addBuckets(sum []bucket, h *dto.Histogram) []bucket {
	bs := h.GetBucket()
	if sum == nil {
		sum = make([]bucket, len(bs)+1)
		for i, b := range bs {
			sum[i].le = b.GetUpperBound()
		}
		sum[len(bs)].le = math.Inf(1)
	}
	for i, b := range bs {
		if i < len(sum)-1 {
			sum[i].count += float64(b.GetCumulativeCount())
		}
	}
	sum[len(sum)-1].count += float64(h.GetSampleCount())
	return sum
}

// quantile is histogram_quantile over the difference of two cumulative
// bucket sets (now minus then): linear within the bucket, the last finite
// bound for the +Inf bucket. NaN when no observation fell between them.
func quantile(q float64, now, then []bucket) float64 {
	diff := make([]bucket, len(now))
	for i := range now {
		diff[i] = now[i]
		if i < len(then) {
			diff[i].count -= then[i].count
		}
	}
	if len(diff) == 0 || diff[len(diff)-1].count <= 0 {
		return math.NaN()
	}
	rank := q * diff[len(diff)-1].count
	i := sort.Search(len(diff), func(i int) bool { return diff[i].count >= rank })
	if i == len(diff)-1 {
		if i == 0 {
			return math.NaN()
		}
		return diff[i-1].le
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = diff[i-1].le, diff[i-1].count
	}
	in := diff[i].count - below
	if in <= 0 {
		return diff[i].le
	}
	return lo + (diff[i].le-lo)*(rank-below)/in
}

// totals are the node's figures since it started.
type totals struct {
	Requests         float64 `json:"requests"`
	CompletionTokens float64 `json:"completion_tokens"`
	PromptTokens     float64 `json:"prompt_tokens"`
	CachedTokens     float64 `json:"cached_prompt_tokens"`
	PrefixCacheHits  float64 `json:"prefix_cache_hits"`
	QueueDepth       float64 `json:"queue_depth"`
	Running          float64 `json:"running"`
	OpenClusters     float64 `json:"open_clusters"`
	PeersSeen        float64 `json:"peers_seen"`
	BackendRestarts  float64 `json:"backend_restarts"`
	TTFTCount        float64 `json:"ttft_count"`
}

func (s snap) totals() totals {
	return totals{Requests: s.requests, CompletionTokens: s.completionTokens, PromptTokens: s.promptTokens,
		CachedTokens: s.cachedTokens, PrefixCacheHits: s.prefixHits, QueueDepth: s.queue, Running: s.running,
		OpenClusters: s.openClusters, PeersSeen: s.peersSeen, BackendRestarts: s.backendRestarts, TTFTCount: s.ttftCount}
}

// point is one step of the figures: rates since the previous snapshot and
// TTFT percentiles over the window before it (null when it saw no request).
type point struct {
	T            time.Time `json:"t"`
	RequestsPerS float64   `json:"requests_per_s"`
	TokensPerS   float64   `json:"tokens_per_s"`
	QueueDepth   float64   `json:"queue_depth"`
	Running      float64   `json:"running"`
	TTFTP50      *float64  `json:"ttft_p50_s"`
	TTFTP95      *float64  `json:"ttft_p95_s"`
	TTFTP99      *float64  `json:"ttft_p99_s"`
}

// history is a ring of the latest snapshots.
type history struct {
	mu    sync.Mutex
	max   int
	snaps []snap
}

func newHistory(max int) *history { return &history{max: max + 1} }

func (h *history) add(s snap) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snaps = append(h.snaps, s)
	if len(h.snaps) > h.max {
		h.snaps = h.snaps[len(h.snaps)-h.max:]
	}
}

// series turns the snapshots into points, the percentiles over window.
func (h *history) series(window time.Duration) []point {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]point, 0, len(h.snaps))
	for i := 1; i < len(h.snaps); i++ {
		cur, prev := h.snaps[i], h.snaps[i-1]
		dt := cur.at.Sub(prev.at).Seconds()
		if dt <= 0 {
			continue
		}
		p := point{T: cur.at.UTC(), RequestsPerS: (cur.requests - prev.requests) / dt,
			TokensPerS: (cur.completionTokens - prev.completionTokens) / dt, QueueDepth: cur.queue, Running: cur.running}
		base := prev
		for j := i - 1; j >= 0 && cur.at.Sub(h.snaps[j].at) <= window; j-- {
			base = h.snaps[j]
		}
		p.TTFTP50 = finite(quantile(0.50, cur.ttft, base.ttft))
		p.TTFTP95 = finite(quantile(0.95, cur.ttft, base.ttft))
		p.TTFTP99 = finite(quantile(0.99, cur.ttft, base.ttft))
		out = append(out, p)
	}
	return out
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}
