package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/loadgen"
)

const benchLong = `Measure a running serve as 'vllm bench serve' measures vLLM.

bench sends --requests streamed chat completions (greedy) to --url, else to
the serve running on the data directory, either keeping --concurrency in
flight or arriving as a Poisson process at --rate requests per second
(seeded by --seed). Prompts are synthetic, about --input-len tokens of
random words each, or come from --prompts FILE.jsonl (one {"prompt": ...}
or {"messages": [...]} a line, optionally with "max_tokens"). Each request
asks for --output-len tokens; the engine may stop earlier on end of text, so
output tokens are the server's count.

It reports successful and failed requests, duration, request and output-token
throughput, and the mean, p50, p95 and p99 of time to first token (TTFT),
inter-token latency (ITL) and end-to-end latency (E2EL), in ms: a table on
stdout, or one JSON object with --json. --plot FILE.png draws their
histograms with the percentiles marked. A request the server fails counts as
failed; when every request fails bench exits 1.`

type benchOptions struct {
	target      serveTarget
	model       string
	concurrency int
	rate        float64
	requests    int
	prompts     string
	inputLen    int
	outputLen   int
	seed        uint64
	json        bool
	plot        string
}

func newBenchCommand(app *App) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench [--url URL] [--model ID] [--concurrency N | --rate R] [--requests N] [--prompts FILE.jsonl | --input-len L --output-len L] [--seed S] [--json] [--plot FILE.png]",
		Short: "Benchmark a running serve: TTFT, inter-token and end-to-end latency, throughput",
		Long:  benchLong,
		Example: `  edgellm bench --concurrency 8 --requests 64
  edgellm bench --rate 2 --requests 100 --input-len 128 --output-len 64 --plot latency.png
  edgellm bench --prompts prompts.jsonl --json --url http://127.0.0.1:8080`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return app.runBench(cmd, o) },
	}
	o.target.register(cmd)
	f := cmd.Flags()
	f.StringVar(&o.model, "model", "", "model id (default: the serve's first model)")
	f.IntVar(&o.concurrency, "concurrency", 4, "requests in flight at most")
	f.Float64Var(&o.rate, "rate", 0, "requests per second, arriving as a Poisson process (instead of --concurrency)")
	f.IntVar(&o.requests, "requests", 32, "requests to send")
	f.StringVar(&o.prompts, "prompts", "", `prompts file: JSONL of {"prompt": ...} or {"messages": [...]}, optional "max_tokens"`)
	f.IntVar(&o.inputLen, "input-len", 32, "synthetic prompt length in tokens (about one a word)")
	f.IntVar(&o.outputLen, "output-len", 32, "max_tokens of each request (a prompts file's own max_tokens wins)")
	f.Uint64Var(&o.seed, "seed", 0, "seed of the synthetic prompts and the arrival times")
	f.BoolVar(&o.json, "json", false, "print the report as one JSON object")
	f.StringVar(&o.plot, "plot", "", "write latency histograms with p50/p95/p99 marked to this PNG file")
	return cmd
}

func (o *benchOptions) validate(cmd *cobra.Command) error {
	changed := cmd.Flags().Changed
	switch {
	case changed("concurrency") && changed("rate"):
		return fmt.Errorf("%w: give --concurrency or --rate, not both", ErrUsage)
	case o.concurrency <= 0:
		return fmt.Errorf("%w: --concurrency must be at least 1", ErrInvalidArgument)
	case changed("rate") && !(o.rate > 0 && o.rate < 1e6):
		return fmt.Errorf("%w: --rate must be a positive number of requests per second", ErrInvalidArgument)
	case o.requests <= 0:
		return fmt.Errorf("%w: --requests must be at least 1", ErrInvalidArgument)
	case o.prompts != "" && changed("input-len"):
		return fmt.Errorf("%w: give --prompts or --input-len, not both", ErrUsage)
	case o.inputLen <= 0 || o.outputLen <= 0:
		return fmt.Errorf("%w: --input-len and --output-len must be at least 1", ErrInvalidArgument)
	case o.plot != "" && !isDir(filepath.Dir(o.plot)):
		return fmt.Errorf("%w: --plot %s: directory %s does not exist", ErrInvalidArgument, o.plot, filepath.Dir(o.plot))
	}
	return nil
}

func (app *App) runBench(cmd *cobra.Command, o *benchOptions) error {
	if err := o.validate(cmd); err != nil {
		return err
	}
	var prompts []loadgen.Prompt
	if o.prompts != "" {
		f, err := os.Open(o.prompts)
		if err != nil {
			return fmt.Errorf("%w: --prompts: %w", ErrInvalidArgument, err)
		}
		prompts, err = loadgen.ParsePrompts(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%w: --prompts %s: %w", ErrInvalidArgument, o.prompts, err)
		}
	} else {
		prompts = loadgen.SyntheticPrompts(o.requests, o.inputLen, o.seed)
	}
	client, models, err := o.target.client(app.interrupt, app, cmd)
	if err != nil {
		return err
	}
	model := o.model
	switch {
	case model == "" && len(models) == 0:
		return fmt.Errorf("%w: serve at %s serves no model", ErrNotFound, client.BaseURL)
	case model == "":
		model = models[0]
	case !slices.Contains(models, model):
		// Ask for it by name: serve answers 404 for a model it does not serve.
		resp, err := client.Do(app.interrupt, http.MethodGet, "/v1/models/"+url.PathEscape(model), nil)
		if err != nil {
			return fmt.Errorf("%w: serve at %s: %w", ErrUnavailable, client.BaseURL, err)
		}
		if resp.Status == http.StatusNotFound {
			return fmt.Errorf("%w: model %q: serve at %s serves %v", ErrNotFound, model, client.BaseURL, models)
		}
	}
	cfg := loadgen.Config{Client: client, Model: model, Requests: o.requests, Concurrency: o.concurrency,
		Prompts: prompts, OutputLen: o.outputLen, Seed: o.seed}
	if cmd.Flags().Changed("rate") {
		cfg.Rate, cfg.Concurrency = o.rate, 0
	}
	line := newStatusLine(app.stderr)
	line.draw(fmt.Sprintf("bench: 0/%d requests…", o.requests))
	cfg.OnResult = func(done int) { line.draw(fmt.Sprintf("bench: %d/%d requests…", done, o.requests)) }
	rep, err := loadgen.Run(app.interrupt, cfg)
	line.clear()
	if err != nil {
		if app.interrupt.Err() != nil {
			return fmt.Errorf("%w: bench", ErrInterrupted)
		}
		return err
	}
	if o.json {
		enc := json.NewEncoder(app.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteTable(app.stdout)
	}
	if o.plot != "" {
		if err := rep.WritePlot(o.plot); err != nil {
			return fmt.Errorf("--plot %s: %w", o.plot, err)
		}
	}
	if rep.Successful == 0 {
		return fmt.Errorf("all %d requests failed (first: %s)", rep.Failed, rep.Errors[0])
	}
	return nil
}
