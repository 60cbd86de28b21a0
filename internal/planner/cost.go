package planner

import (
	"math"
	"math/bits"
	"time"
)

// Constants of the cost model (see the package doc).
const (
	// MemoryOverheadPercent is added to a stage's share of the weights for
	// its KV cache and activations.
	MemoryOverheadPercent = 10
	// UnmeasuredRTT is the pessimistic RTT of a peer whose RTT is 0.
	UnmeasuredRTT = 250 * time.Millisecond
	// UnmeasuredDecodeTokensPerS is the pessimistic speed of a peer that has
	// not measured itself yet.
	UnmeasuredDecodeTokensPerS = 1.0
	// WANPenalty is added to a plan's rank (not to its expected latency) for
	// each stage on a peer that is neither on the LAN nor the requester.
	WANPenalty = 2 * time.Millisecond
	// ExactMaxPeers is the largest candidate set searched exhaustively.
	ExactMaxPeers = 7
)

// stageBytes is the memory a stage of n out of numLayers layers needs:
// ceil(weights · n · (100+overhead) / (100 · numLayers)), saturating.
func stageBytes(weights uint64, n, numLayers int) uint64 {
	if weights == 0 || n <= 0 || numLayers <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(weights, uint64(n)*(100+MemoryOverheadPercent))
	den := uint64(numLayers) * 100
	if hi >= den {
		return math.MaxUint64
	}
	q, r := bits.Div64(hi, lo, den)
	if r != 0 && q < math.MaxUint64 {
		q++
	}
	return q
}

// layerCap is the most layers (≤ numLayers) whose stage fits in free bytes;
// a saturated need never fits.
func layerCap(free, weights uint64, numLayers int) int {
	lo, hi := 0, numLayers // stageBytes is monotone in n: binary search
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if need := stageBytes(weights, mid, numLayers); need <= free && need < math.MaxUint64 {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// computeTime is the expected per-token compute of n of numLayers layers on
// a peer decoding the whole model at tokPerS.
func computeTime(n, numLayers int, tokPerS float64) time.Duration {
	sec := float64(n) / (float64(numLayers) * tokPerS)
	if sec >= float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64 / 4) // absurdly slow, still summable
	}
	return time.Duration(math.Round(sec * float64(time.Second)))
}

// effectiveSpeed replaces an unmeasured (or nonsensical) speed.
func effectiveSpeed(v float64) float64 {
	if !(v > 0) || math.IsInf(v, 0) {
		return UnmeasuredDecodeTokensPerS
	}
	return v
}

// effectiveRTT is the RTT the cost model uses for a peer.
func effectiveRTT(p Peer) time.Duration {
	switch {
	case p.Requester:
		return 0
	case p.RTT <= 0:
		return UnmeasuredRTT
	}
	return p.RTT
}

// stagePrice is price · n / numLayers rounded up, saturating.
func stagePrice(price uint64, n, numLayers int) uint64 {
	hi, lo := bits.Mul64(price, uint64(n))
	if hi >= uint64(numLayers) {
		return math.MaxUint64
	}
	q, r := bits.Div64(hi, lo, uint64(numLayers))
	if r != 0 {
		q++
	}
	return q
}

// addSat adds without wrapping around.
func addSat(a, b uint64) uint64 {
	if s, c := bits.Add64(a, b, 0); c == 0 {
		return s
	}
	return math.MaxUint64
}

// Loading a model a peer serves but has not loaded (see the package doc).
const (
	// LoadBaseTime and LoadBytesPerS estimate a load the record gives no
	// time for: LoadBaseTime plus the weights read at LoadBytesPerS (the
	// embedded 0.5 GB model loads and measures itself in about 3 s here).
	LoadBaseTime  = time.Second
	LoadBytesPerS = 256 << 20
	// MaxLoadTime caps a claimed or estimated load.
	MaxLoadTime = 10 * time.Minute
)

// loadTime is what a peer expects to wait before a stage of m can run: 0
// when loaded, the record's time, else EstimatedLoadTime.
func loadTime(m Model) time.Duration {
	switch {
	case !m.Unloaded:
		return 0
	case m.LoadTime > 0:
		return min(m.LoadTime, MaxLoadTime)
	}
	return EstimatedLoadTime(m.WeightsBytes)
}

// EstimatedLoadTime is LoadBaseTime plus weights at LoadBytesPerS, capped.
func EstimatedLoadTime(weights uint64) time.Duration {
	sec := float64(weights) / LoadBytesPerS
	if sec >= MaxLoadTime.Seconds() {
		return MaxLoadTime
	}
	return min(LoadBaseTime+time.Duration(sec*float64(time.Second)), MaxLoadTime)
}

// loadPenalty spreads a load over the answer's tokens (at least 1): a plan's
// rank is a per-token latency, so this is the load in the same unit.
func loadPenalty(load time.Duration, answerTokens int) time.Duration {
	return load / time.Duration(max(answerTokens, 1))
}
