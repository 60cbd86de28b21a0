package openai

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads /metrics and parses the text format.
func scrape(t *testing.T, s *Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp := serve(t, s, http.MethodGet, "/metrics", "")
	if resp.status != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(resp.body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, resp.body)
	}
	return families
}

// series finds the sample of family whose labels include want.
func series(t *testing.T, families map[string]*dto.MetricFamily, family string, want map[string]string) *dto.Metric {
	t.Helper()
	f, ok := families[family]
	if !ok {
		t.Fatalf("no family %s", family)
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m
	}
	t.Fatalf("%s has no series with labels %v", family, want)
	return nil
}

func TestMetricsAfterRequests(t *testing.T) {
	eng := newFakeEngine()
	s := newTestServer(t, eng, Options{})
	post(t, s, "/v1/chat/completions", chatBody)
	post(t, s, "/v1/chat/completions", chatWith(`"stream":true`))
	post(t, s, "/v1/chat/completions", chatWith(`"temperature":9`))
	post(t, s, "/v1/completions", `{"model":"nope","prompt":"x"}`)
	s.Metrics().PeersSeen.Set(3)
	s.Metrics().BackendRestarts.Inc()

	fams := scrape(t, s)
	chat := "POST /v1/chat/completions"
	if got := series(t, fams, "edgellm_http_requests_total",
		map[string]string{"endpoint": chat, "model": testModel.ID, "route": RouteLocal, "code": "200"}); got.GetCounter().GetValue() != 2 {
		t.Errorf("200s counted %v, want 2", got.GetCounter().GetValue())
	}
	series(t, fams, "edgellm_http_requests_total", map[string]string{"endpoint": chat, "model": labelNone, "route": labelNone, "code": "400"})
	// An unknown model id is not a label value: labels stay bounded.
	series(t, fams, "edgellm_http_requests_total", map[string]string{"endpoint": "POST /v1/completions", "model": labelNone, "code": "404"})
	for family, want := range map[string]float64{
		"edgellm_prompt_tokens_total":        14,
		"edgellm_cached_prompt_tokens_total": 6,
		"edgellm_completion_tokens_total":    6,
	} {
		if got := series(t, fams, family, map[string]string{"model": testModel.ID}).GetCounter().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", family, got, want)
		}
	}
	ttft := series(t, fams, "edgellm_time_to_first_token_seconds", map[string]string{"model": testModel.ID, "route": RouteLocal})
	if ttft.GetHistogram().GetSampleCount() != 2 {
		t.Errorf("TTFT samples %d, want 2", ttft.GetHistogram().GetSampleCount())
	}
	itl := series(t, fams, "edgellm_inter_token_latency_seconds", map[string]string{"model": testModel.ID, "route": RouteLocal})
	if itl.GetHistogram().GetSampleCount() != 4 { // 3 tokens: 2 gaps per generation
		t.Errorf("ITL samples %d, want 4", itl.GetHistogram().GetSampleCount())
	}
	batch := series(t, fams, "edgellm_decode_batch_size", map[string]string{"model": testModel.ID, "route": RouteLocal})
	if h := batch.GetHistogram(); h.GetSampleCount() != 2 || h.GetSampleSum() != 6 { // the engine said 3, twice
		t.Errorf("decode batch sizes: %d samples, sum %v; want 2, 6", h.GetSampleCount(), h.GetSampleSum())
	}
	series(t, fams, "edgellm_queue_depth", map[string]string{"model": testModel.ID})
	series(t, fams, "edgellm_requests_running", map[string]string{"model": testModel.ID})
	if got := series(t, fams, "edgellm_peers_seen", nil).GetGauge().GetValue(); got != 3 {
		t.Errorf("peers seen %v", got)
	}
	if got := series(t, fams, "edgellm_backend_restarts_total", nil).GetCounter().GetValue(); got != 1 {
		t.Errorf("backend restarts %v", got)
	}
	for _, f := range []string{"edgellm_open_clusters", "edgellm_prefix_cache_hits_total", "edgellm_kubo_restarts_total",
		"go_goroutines", "process_cpu_seconds_total"} {
		series(t, fams, f, nil)
	}
}

// Two servers in one process have their own registries.
func TestMetricsRegistriesAreSeparate(t *testing.T) {
	a := newTestServer(t, newFakeEngine(), Options{})
	b := newTestServer(t, newFakeEngine(), Options{})
	post(t, a, "/v1/chat/completions", chatBody)
	if _, ok := scrape(t, b)["edgellm_prompt_tokens_total"]; ok {
		t.Error("b exposes a's series")
	}
}

// Cached prompt tokens count by holder; the holder label stays bounded (the
// peers past MaxHolderLabels count as "other").
func TestMetricsCachedFromHolders(t *testing.T) {
	s := newTestServer(t, newFakeEngine(), Options{})
	m := s.Metrics()
	m.AddCachedFrom([]string{"peerA", "peerB"}, 32)
	m.AddCachedFrom([]string{"peerA"}, 16)
	m.AddCachedFrom([]string{"peerA"}, 0) // nothing cached: nothing counted
	for i := range MaxHolderLabels + 5 {
		m.AddCachedFrom([]string{fmt.Sprintf("many%d", i)}, 1)
	}
	fams := scrape(t, s)
	const family = "edgellm_cached_prompt_tokens_by_holder_total"
	for holder, want := range map[string]float64{"peerA": 48, "peerB": 32, HolderOther: 7} {
		if got := series(t, fams, family, map[string]string{"holder": holder}).GetCounter().GetValue(); got != want {
			t.Errorf("%s{holder=%q} = %v, want %v", family, holder, got, want)
		}
	}
	if n := len(fams[family].GetMetric()); n != MaxHolderLabels+1 {
		t.Errorf("%d holder series, want %d (bounded, plus %q)", n, MaxHolderLabels+1, HolderOther)
	}
}
