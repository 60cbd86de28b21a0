package console

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/openai"
)

// TestQuantile: histogram_quantile over the difference of two bucket sets.
func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	then := []bucket{{0.1, 1}, {1, 1}, {10, 1}, {inf, 1}}
	now := []bucket{{0.1, 1}, {1, 5}, {10, 11}, {inf, 11}} // +4 in (0.1,1], +6 in (1,10]
	for _, c := range []struct{ q, want float64 }{{0.5, 1 + 9*(5.0-4)/6}, {0.25, 0.1 + 0.9*2.5/4}, {1, 10}} {
		if got := quantile(c.q, now, then); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := quantile(0.5, then, then); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
}

// TestStatus: the page and its assets are served, other paths reach the API,
// /status needs the key and reads the registry /metrics serves.
func TestStatus(t *testing.T) {
	m := openai.NewMetrics()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api "+r.URL.Path) })
	c := New(Options{API: api, Metrics: m, APIKey: "k", Sample: 10 * time.Millisecond, Self: "me",
		Peers:      func(context.Context) any { return []map[string]string{{"peer_id": "p1", "region": "<b>x</b>"}} },
		Trace:      func() (any, bool) { return map[string]string{"route": "local"}, true },
		BlocksHeld: func(context.Context) (int, bool) { return 7, true }})
	defer c.Close()
	srv := httptest.NewServer(c)
	defer srv.Close()
	get := func(path, key string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/", ""); code != 200 || !strings.Contains(body, "/console/app.js") {
		t.Errorf("GET /: %d %.80q", code, body)
	}
	if code, body := get("/console/app.js", ""); code != 200 || !strings.Contains(body, "textContent") {
		t.Errorf("GET /console/app.js: %d", code)
	}
	if code, body := get("/v1/models", ""); code != 200 || body != "api /v1/models" {
		t.Errorf("GET /v1/models went to %d %q, want the API", code, body)
	}
	for _, key := range []string{"", "wrong"} {
		if code, body := get("/status", key); code != 401 || !strings.Contains(body, "invalid_api_key") {
			t.Errorf("GET /status with key %q: %d %s", key, code, body)
		}
	}
	m.PrefixCacheHits.Add(3)
	m.OpenClusters.Set(1)
	time.Sleep(300 * time.Millisecond) // peers looked up, snapshots taken
	code, body := get("/status", "k")
	var st struct {
		Self  string           `json:"self"`
		Swarm bool             `json:"swarm"`
		Peers []map[string]any `json:"peers"`
		Last  map[string]any   `json:"last"`
		KV    struct {
			BlocksHeld int `json:"blocks_held"`
		} `json:"kv"`
		Totals map[string]float64
		Series []map[string]any
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("GET /status: %d %v\n%s", code, err, body)
	}
	if st.Self != "me" || !st.Swarm || len(st.Peers) != 1 || st.Peers[0]["region"] != "<b>x</b>" || st.Last["route"] != "local" {
		t.Errorf("status %s", body)
	}
	if st.KV.BlocksHeld != 7 {
		t.Errorf("kv %+v, want 7 blocks held", st.KV)
	}
	if st.Totals["prefix_cache_hits"] != 3 || st.Totals["open_clusters"] != 1 || len(st.Series) == 0 {
		t.Errorf("totals %v, %d points; want 3 hits, 1 cluster, some points", st.Totals, len(st.Series))
	}
}
