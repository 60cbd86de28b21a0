package planner

import (
	"math"
	"testing"
	"time"
)

func TestStageBytes(t *testing.T) {
	tests := []struct {
		weights   uint64
		n, layers int
		want      uint64
	}{
		{1000, 30, 30, 1100},
		{1000, 1, 30, 37}, // 36.67 rounded up
		{0, 5, 30, 0},
		{math.MaxUint64, 30, 30, math.MaxUint64}, // saturates
		{1 << 62, 1, 1 << 20, 4837851162215},     // 2^42 · 1.1, no overflow in between
	}
	for _, tc := range tests {
		if got := stageBytes(tc.weights, tc.n, tc.layers); got != tc.want {
			t.Errorf("stageBytes(%d, %d, %d) = %d, want %d", tc.weights, tc.n, tc.layers, got, tc.want)
		}
	}
}

func TestLayerCap(t *testing.T) {
	tests := []struct {
		free, weights uint64
		layers, want  int
	}{
		{1100, 1000, 30, 30},
		{1099, 1000, 30, 29},
		{36, 1000, 30, 0},
		{37, 1000, 30, 1},
		{0, 0, 30, 30}, // size unknown: not checked
		{math.MaxUint64, math.MaxUint64, 4, 3},
	}
	for _, tc := range tests {
		if got := layerCap(tc.free, tc.weights, tc.layers); got != tc.want {
			t.Errorf("layerCap(%d, %d, %d) = %d, want %d", tc.free, tc.weights, tc.layers, got, tc.want)
		}
		if c := layerCap(tc.free, tc.weights, tc.layers); c > 0 && stageBytes(tc.weights, c, tc.layers) > tc.free {
			t.Errorf("layerCap(%d, %d, %d) = %d does not fit", tc.free, tc.weights, tc.layers, c)
		}
	}
}

func TestComputeTime(t *testing.T) {
	tests := []struct {
		n, layers int
		speed     float64
		want      time.Duration
	}{
		{30, 30, 10, 100 * time.Millisecond},
		{15, 30, 10, 50 * time.Millisecond},
		{1, 3, 1, 333333333},
		{1, 1, 1e-30, time.Duration(math.MaxInt64 / 4)},
	}
	for _, tc := range tests {
		if got := computeTime(tc.n, tc.layers, tc.speed); got != tc.want {
			t.Errorf("computeTime(%d, %d, %g) = %v, want %v", tc.n, tc.layers, tc.speed, got, tc.want)
		}
	}
}

func TestEffectiveInputs(t *testing.T) {
	for _, v := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if got := effectiveSpeed(v); got != UnmeasuredDecodeTokensPerS {
			t.Errorf("effectiveSpeed(%g) = %g", v, got)
		}
	}
	if effectiveSpeed(7) != 7 {
		t.Error("effectiveSpeed(7)")
	}
	for _, tc := range []struct {
		p    Peer
		want time.Duration
	}{
		{Peer{RTT: 3 * time.Millisecond}, 3 * time.Millisecond},
		{Peer{}, UnmeasuredRTT},
		{Peer{RTT: -1}, UnmeasuredRTT},
		{Peer{RTT: time.Second, Requester: true}, 0},
	} {
		if got := effectiveRTT(tc.p); got != tc.want {
			t.Errorf("effectiveRTT(%+v) = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestStagePrice(t *testing.T) {
	tests := []struct {
		price     uint64
		n, layers int
		want      uint64
	}{
		{3000, 10, 30, 1000},
		{1000, 1, 3, 334},
		{0, 5, 30, 0},
		{math.MaxUint64, 2, 1, math.MaxUint64},
	}
	for _, tc := range tests {
		if got := stagePrice(tc.price, tc.n, tc.layers); got != tc.want {
			t.Errorf("stagePrice(%d, %d, %d) = %d, want %d", tc.price, tc.n, tc.layers, got, tc.want)
		}
	}
	if addSat(math.MaxUint64, 1) != math.MaxUint64 || addSat(2, 3) != 5 {
		t.Error("addSat")
	}
}
