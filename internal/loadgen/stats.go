// Package loadgen drives a running serve with streamed chat completions and
// measures it, as `vllm bench serve` does: a fixed number of requests at a
// concurrency or at a Poisson request rate, time to first token,
// inter-token latency and end-to-end latency with their percentiles, and
// request and output-token throughput.
//
// Decisions:
//   - Percentiles interpolate linearly between closest ranks (numpy's
//     default, which vLLM's benchmark uses), so figures compare with its.
//   - Inter-token latency is the gap between consecutive streamed content
//     chunks, pooled over all requests; end-to-end latency runs from the
//     request sent to [DONE]; TTFT to the first chunk with content.
//   - Output tokens are the server's count (usage, asked for with
//     stream_options.include_usage), not the chunks seen: the engine may stop
//     early on EOS, and a chunk may carry more than one token.
//   - Arrivals at a rate are a Poisson process (exponential gaps) from a
//     seeded generator, so a run is repeatable; synthetic prompts are drawn
//     from the same seed and differ per request, so the prefix cache does not
//     flatter TTFT.
package loadgen

import (
	"math"
	"slices"
)

// Percentile is the p-th percentile (0..100) of values, interpolating
// linearly between closest ranks; NaN for no values.
func Percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	return percentileSorted(s, p)
}

func percentileSorted(s []float64, p float64) float64 {
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (s[hi]-s[lo])*(rank-float64(lo))
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	N    int     `json:"n"`
}

// Summarize is values' mean and percentiles (zeros for no values, so the
// JSON stays numeric).
func Summarize(values []float64) Dist {
	if len(values) == 0 {
		return Dist{}
	}
	s := slices.Clone(values)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	return Dist{Mean: sum / float64(len(s)), P50: percentileSorted(s, 50), P95: percentileSorted(s, 95),
		P99: percentileSorted(s, 99), N: len(s)}
}
