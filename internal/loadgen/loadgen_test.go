package loadgen

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/apiclient"
)

func TestPercentile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []float64
		p      float64
		want   float64
	}{
		{"one value", []float64{7}, 99, 7},
		{"median of odd", []float64{3, 1, 2}, 50, 2},
		{"median of even interpolates", []float64{1, 2, 3, 4}, 50, 2.5},
		{"p0 is the min", []float64{5, 1, 9}, 0, 1},
		{"p100 is the max", []float64{5, 1, 9}, 100, 9},
		{"p95 of 1..100 (numpy: 95.05)", seq(100), 95, 95.05},
		{"p99 of 1..10 (numpy: 9.91)", seq(10), 99, 9.91},
		{"unsorted input", []float64{10, 40, 20, 30}, 25, 17.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.values)
			if got := Percentile(tc.values, tc.p); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.values, tc.p, got, tc.want)
			}
			if !slices.Equal(in, tc.values) {
				t.Error("Percentile reordered its input")
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of nothing is not NaN")
	}
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestSummarize(t *testing.T) {
	d := Summarize([]float64{4, 1, 3, 2})
	if d.Mean != 2.5 || d.P50 != 2.5 || d.N != 4 || d.P99 < d.P95 || d.P95 < d.P50 {
		t.Errorf("Summarize = %+v", d)
	}
	if (Summarize(nil) != Dist{}) {
		t.Error("Summarize(nil) is not zero")
	}
}

func TestPoissonArrivals(t *testing.T) {
	for _, tc := range []struct {
		n    int
		rate float64
		seed uint64
	}{{2000, 4, 1}, {2000, 50, 7}, {1, 3, 0}} {
		a := PoissonArrivals(tc.n, tc.rate, tc.seed)
		if len(a) != tc.n || a[0] != 0 {
			t.Fatalf("PoissonArrivals(%d): %d times, first %v", tc.n, len(a), a[0])
		}
		if !slices.IsSorted(a) {
			t.Errorf("arrivals not increasing")
		}
		if !slices.Equal(a, PoissonArrivals(tc.n, tc.rate, tc.seed)) {
			t.Errorf("same seed, different arrivals")
		}
		if tc.n > 1 {
			if slices.Equal(a, PoissonArrivals(tc.n, tc.rate, tc.seed+1)) {
				t.Errorf("different seeds, same arrivals")
			}
			// n-1 exponential gaps of mean 1/rate: the mean gap is within 10%.
			mean := a[len(a)-1] / float64(tc.n-1)
			if math.Abs(mean*tc.rate-1) > 0.1 {
				t.Errorf("rate %v: mean gap %v, want about %v", tc.rate, mean, 1/tc.rate)
			}
		}
	}
}

func TestParsePrompts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int    // prompts
		err      string // substring of the error
	}{
		{"prompt and messages", `{"prompt": "hi"}` + "\n\n" + `{"messages": [{"role": "user", "content": "yo"}], "max_tokens": 4}`, 2, ""},
		{"not JSON", `{"prompt": "a"}` + "\n" + `nope`, 0, "line 2: not a JSON object"},
		{"neither", `{"text": "a"}`, 0, `line 1: no "prompt"`},
		{"both", `{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}`, 0, "not both"},
		{"empty prompt", `{"prompt": " "}`, 0, "empty"},
		{"bad message", `{"messages": ["hi"]}`, 0, "messages[0]"},
		{"bad max_tokens", "\n" + `{"prompt": "a", "max_tokens": 0}`, 0, "line 2: \"max_tokens\""},
		{"prompt not a string", `{"prompt": 3}`, 0, "line 1"},
		{"empty file", "\n", 0, "no prompts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePrompts(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %d prompts, %v; want %d", len(got), err, tc.want)
			}
		})
	}
	p, _ := ParsePrompts(strings.NewReader(`{"prompt": "hi", "max_tokens": 9}`))
	if string(p[0].Messages[0]) != `{"content":"hi","role":"user"}` || p[0].MaxTokens != 9 {
		t.Errorf("prompt parsed as %s, %d", p[0].Messages[0], p[0].MaxTokens)
	}
}

func TestSyntheticPrompts(t *testing.T) {
	a, b := SyntheticPrompts(3, 32, 5), SyntheticPrompts(3, 32, 5)
	for i := range a {
		if !bytes.Equal(a[i].Messages[0], b[i].Messages[0]) {
			t.Error("same seed, different prompts")
		}
	}
	if bytes.Equal(a[0].Messages[0], a[1].Messages[0]) {
		t.Error("two requests got the same prompt (the prefix cache would serve the second)")
	}
	if n := len(strings.Fields(string(a[0].Messages[0]))); n < 28 || n > 36 {
		t.Errorf("prompt of input length 32 has %d words", n)
	}
}

func TestReportTableAndPlot(t *testing.T) {
	results := []Result{
		{OK: true, InputTokens: 10, OutputTokens: 4, TTFT: 20e6, E2E: 80e6, ITL: []time.Duration{20e6, 20e6, 20e6}},
		{OK: true, InputTokens: 10, OutputTokens: 2, TTFT: 40e6, E2E: 60e6, ITL: []time.Duration{20e6}},
		{Err: "HTTP 500: boom"},
	}
	r := reportFor(results)
	if r.Successful != 2 || r.Failed != 1 || r.TotalOutputTokens != 6 || r.TTFT.Mean != 30 || r.ITL.N != 4 ||
		r.E2E.P50 != 70 || len(r.Errors) != 1 {
		t.Errorf("report %+v", r)
	}
	var table bytes.Buffer
	r.WriteTable(&table)
	for _, want := range []string{"Successful requests:", "Failed requests:", "P99 TTFT (ms):", "Mean ITL (ms):", "P95 E2EL (ms):", "error: HTTP 500: boom"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	path := filepath.Join(t.TempDir(), "p.png")
	if err := r.WritePlot(path); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("plot is not a PNG: %v", err)
	}
}

func reportFor(results []Result) *Report {
	return report(Config{Model: "m", Concurrency: 2, Client: apiclient.New("http://x", "")}, results, time.Second)
}
