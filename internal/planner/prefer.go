package planner

import (
	"math"
	"time"
)

// MaxPreferBonus caps one peer's Request.Prefer bonus.
const MaxPreferBonus = time.Second

// PrefixBonus prices a cached prompt prefix for Request.Prefer: the prefill
// time a peer holding cachedTokens of the prompt saves (at prefillTokensPerS,
// the swarm's typical prefill speed; unmeasured counts as
// UnmeasuredDecodeTokensPerS) spread over the answerTokens the request
// expects (at least 1), capped at MaxPreferBonus. A plan's rank is a
// per-token latency, so this is the saving in the same unit.
func PrefixBonus(cachedTokens int, prefillTokensPerS float64, answerTokens int) time.Duration {
	if cachedTokens <= 0 {
		return 0
	}
	speed := effectiveSpeed(prefillTokensPerS)
	sec := float64(cachedTokens) / speed / float64(max(answerTokens, 1))
	if sec >= MaxPreferBonus.Seconds() || math.IsNaN(sec) {
		return MaxPreferBonus
	}
	return time.Duration(math.Round(sec * float64(time.Second)))
}
