package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgellm/edgellm/internal/apiclient"
)

// Config is one benchmark run.
type Config struct {
	Client      *apiclient.Client
	Model       string
	Requests    int
	Concurrency int     // requests in flight at most; 0 with Rate set: unbounded
	Rate        float64 // requests per second (Poisson); 0: send as fast as Concurrency allows
	Prompts     []Prompt
	OutputLen   int // max_tokens of a prompt that sets none
	Seed        uint64
	// OnResult is called (from one goroutine at a time) after each request.
	OnResult func(done int)
}

// Result is one request's measurements.
type Result struct {
	OK           bool
	Err          string
	InputTokens  int
	OutputTokens int
	TTFT         time.Duration
	E2E          time.Duration
	ITL          []time.Duration
}

// Report is a run's figures; its JSON is `edgellm bench --json`.
type Report struct {
	Model              string   `json:"model"`
	URL                string   `json:"url"`
	Concurrency        int      `json:"concurrency"`
	RequestRate        float64  `json:"request_rate"` // 0: unlimited (closed loop at Concurrency)
	Seed               uint64   `json:"seed"`
	Requests           int      `json:"requests"`
	Successful         int      `json:"successful_requests"`
	Failed             int      `json:"failed_requests"`
	DurationS          float64  `json:"duration_s"`
	TotalInputTokens   int      `json:"total_input_tokens"`
	TotalOutputTokens  int      `json:"total_output_tokens"`
	RequestThroughput  float64  `json:"request_throughput"`      // successful requests per second
	OutputThroughput   float64  `json:"output_token_throughput"` // output tokens per second
	TTFT               Dist     `json:"ttft_ms"`
	ITL                Dist     `json:"itl_ms"`
	E2E                Dist     `json:"e2e_latency_ms"`
	Errors             []string `json:"errors"` // the distinct failure messages, at most 10
	ttfts, itls, e2els []float64
}

// Samples are the report's raw latencies in ms (for plots).
func (r *Report) Samples() (ttft, itl, e2e []float64) { return r.ttfts, r.itls, r.e2els }

// Run sends cfg.Requests streamed chat completions and measures them. A
// request that fails (an HTTP error, a broken stream) counts as failed; Run
// itself fails only when ctx ends (with ctx's error and no report).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Requests < 1 || len(cfg.Prompts) == 0 {
		return nil, errors.New("loadgen: no requests")
	}
	var arrivals []float64
	if cfg.Rate > 0 {
		arrivals = PoissonArrivals(cfg.Requests, cfg.Rate, cfg.Seed)
	}
	limit := cfg.Concurrency
	if limit < 1 {
		limit = cfg.Requests
	}
	sem := make(chan struct{}, limit)
	results := make([]Result, cfg.Requests)
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	start := time.Now()
	for i := range cfg.Requests {
		if arrivals != nil {
			if wait := time.Until(start.Add(time.Duration(arrivals[i] * float64(time.Second)))); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = one(ctx, cfg, cfg.Prompts[i%len(cfg.Prompts)])
			mu.Lock()
			done++
			if cfg.OnResult != nil {
				cfg.OnResult(done)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return report(cfg, results, time.Since(start)), nil
}

// one sends a request and times its stream.
func one(ctx context.Context, cfg Config, p Prompt) Result {
	maxTokens := p.MaxTokens
	if maxTokens == 0 {
		maxTokens = cfg.OutputLen
	}
	body, _ := json.Marshal(map[string]any{
		"model": cfg.Model, "messages": p.Messages, "max_tokens": maxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]bool{"include_usage": true},
	})
	var r Result
	start := time.Now()
	last := start
	var usageSeen bool
	resp, err := cfg.Client.Stream(ctx, "/v1/chat/completions", body, func(data []byte) {
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(data, &chunk) != nil {
			return
		}
		now := time.Now()
		if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			if r.TTFT == 0 {
				r.TTFT = now.Sub(start)
			} else {
				r.ITL = append(r.ITL, now.Sub(last))
			}
			last = now
		}
		if chunk.Usage != nil {
			usageSeen = true
			r.InputTokens, r.OutputTokens = chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens
		}
	})
	r.E2E = time.Since(start)
	switch {
	case err != nil:
		r.Err = err.Error()
	case resp.Status != http.StatusOK:
		r.Err = fmt.Sprintf("HTTP %d: %s", resp.Status, apiclient.ErrorMessage(resp.Body))
	case !usageSeen:
		r.Err = "the stream carried no usage"
	default:
		r.OK = true
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report sums up results.
func report(cfg Config, results []Result, elapsed time.Duration) *Report {
	rep := &Report{Model: cfg.Model, URL: cfg.Client.BaseURL, Concurrency: cfg.Concurrency, RequestRate: cfg.Rate,
		Seed: cfg.Seed, Requests: len(results), DurationS: elapsed.Seconds(), Errors: []string{}}
	seen := map[string]bool{}
	for _, r := range results {
		if !r.OK {
			rep.Failed++
			if !seen[r.Err] && len(rep.Errors) < 10 {
				seen[r.Err] = true
				rep.Errors = append(rep.Errors, r.Err)
			}
			continue
		}
		rep.Successful++
		rep.TotalInputTokens += r.InputTokens
		rep.TotalOutputTokens += r.OutputTokens
		if r.TTFT > 0 {
			rep.ttfts = append(rep.ttfts, ms(r.TTFT))
		}
		rep.e2els = append(rep.e2els, ms(r.E2E))
		for _, g := range r.ITL {
			rep.itls = append(rep.itls, ms(g))
		}
	}
	if s := elapsed.Seconds(); s > 0 {
		rep.RequestThroughput = float64(rep.Successful) / s
		rep.OutputThroughput = float64(rep.TotalOutputTokens) / s
	}
	rep.TTFT, rep.ITL, rep.E2E = Summarize(rep.ttfts), Summarize(rep.itls), Summarize(rep.e2els)
	return rep
}
