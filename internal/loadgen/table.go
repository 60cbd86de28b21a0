package loadgen

import (
	"fmt"
	"io"
)

// WriteTable writes the report as a table, laid out as vLLM's benchmark
// prints its own.
func (r *Report) WriteTable(w io.Writer) {
	line := func(name string, format string, v any) { fmt.Fprintf(w, "%-40s"+format+"\n", name+":", v) }
	title := func(s string) { fmt.Fprintf(w, "%s\n", center(s, 50, '-')) }
	fmt.Fprintf(w, "%s\n", center(" Serving Benchmark Result ", 50, '='))
	line("Model", "%s", r.Model)
	if r.RequestRate > 0 {
		line("Request rate (req/s)", "%.2f", r.RequestRate)
	} else {
		line("Concurrency", "%d", r.Concurrency)
	}
	line("Successful requests", "%d", r.Successful)
	line("Failed requests", "%d", r.Failed)
	line("Benchmark duration (s)", "%.2f", r.DurationS)
	line("Total input tokens", "%d", r.TotalInputTokens)
	line("Total generated tokens", "%d", r.TotalOutputTokens)
	line("Request throughput (req/s)", "%.2f", r.RequestThroughput)
	line("Output token throughput (tok/s)", "%.2f", r.OutputThroughput)
	for _, d := range []struct {
		title, short string
		dist         Dist
	}{{"Time to First Token", "TTFT", r.TTFT}, {"Inter-token Latency", "ITL", r.ITL}, {"End-to-end Latency", "E2EL", r.E2E}} {
		title(d.title)
		line("Mean "+d.short+" (ms)", "%.2f", d.dist.Mean)
		line("P50 "+d.short+" (ms)", "%.2f", d.dist.P50)
		line("P95 "+d.short+" (ms)", "%.2f", d.dist.P95)
		line("P99 "+d.short+" (ms)", "%.2f", d.dist.P99)
	}
	fmt.Fprintf(w, "%s\n", center("", 50, '='))
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

func center(s string, width int, fill byte) string {
	pad := max(width-len(s), 0)
	left := pad / 2
	b := make([]byte, 0, width)
	for range left {
		b = append(b, fill)
	}
	b = append(b, s...)
	for range pad - left {
		b = append(b, fill)
	}
	return string(b)
}
