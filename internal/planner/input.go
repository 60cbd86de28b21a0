package planner

import (
	"fmt"
	"time"
)

// LayerRange is the half-open range of layers [Start, End).
type LayerRange struct {
	Start, End int
}

// Model is one model a peer serves, as its capability record lists it.
type Model struct {
	ID           string
	WeightsCID   string // peers with the same CID hold the same bytes
	NumLayers    int    // 0 = unknown: the entry cannot be planned
	WeightsBytes uint64 // the whole model's weights; 0 = unknown (memory not checked)
	// LayerRanges the peer can hold; empty means the whole model. A stage on
	// this peer must lie inside one of them.
	LayerRanges []LayerRange
	// Unloaded: the peer can serve the model but must load it first (a
	// worker serving several models within a memory budget); a plan with a
	// stage on it waits LoadTime, or EstimatedLoadTime when that is 0.
	Unloaded bool
	LoadTime time.Duration
}

// Peer is what the planner knows about one peer: its capability record plus
// what the requester measured or decided about it.
type Peer struct {
	ID                string
	Models            []Model
	MemoryFreeBytes   uint64
	PrefillTokensPerS float64 // informative; the cost model uses decode speed
	DecodeTokensPerS  float64 // whole model on this peer; 0 = not measured
	ActiveSessions    int
	MaxSessions       int    // 0 counts as 1, as the worker does
	PricePer1kMicros  uint64 // millionths of a credit per 1000 tokens
	Region            string // free-form label; "" = unknown
	// RTT measured from the requester; 0 = not measured (costs UnmeasuredRTT).
	// Leave out peers that could not be reached at all.
	RTT       time.Duration
	LAN       bool // on the requester's local network (e.g. found by mDNS)
	Trusted   bool // the user trusts this peer (for Request.TrustedOnly)
	Requester bool // the requesting node itself; its RTT counts as 0
}

// Request is what the user asks for and the limits a plan must respect.
type Request struct {
	Model               string        // model id or weights CID
	WeightsCID          string        // optional: only peers with these weights
	MaxPricePer1kMicros uint64        // 0 = no limit
	MaxTokenLatency     time.Duration // 0 = no limit
	TrustedOnly         bool
	Stages              int // 0 = auto
	// Prefer maps peer ids to a rank bonus (KV-aware routing): a peer that
	// already holds the prompt's cached KV prefix skips that prefill, a
	// saving the caller prices as per-token latency (PrefixBonus). Each
	// stage on such a peer lowers the plan's rank by its bonus; the
	// expected latency, and the MaxTokenLatency check, are unaffected. Nil:
	// no preference.
	Prefer map[string]time.Duration
	// AnswerTokens the request expects (at least 1 counts): a plan that must
	// load the model on a peer first spreads that load over them in its rank
	// (see the package doc).
	AnswerTokens int
}

func (r Request) validate() error {
	switch {
	case r.Model == "":
		return fmt.Errorf("%w: no model named", ErrInvalidRequest)
	case r.Stages < 0:
		return fmt.Errorf("%w: --stages %d is negative", ErrInvalidRequest, r.Stages)
	case r.AnswerTokens < 0:
		return fmt.Errorf("%w: %d answer tokens", ErrInvalidRequest, r.AnswerTokens)
	case r.MaxTokenLatency < 0:
		return fmt.Errorf("%w: latency limit %v is negative", ErrInvalidRequest, r.MaxTokenLatency)
	}
	for id, bonus := range r.Prefer {
		if bonus < 0 || bonus > MaxPreferBonus {
			return fmt.Errorf("%w: preference %v for peer %s is outside [0, %v]", ErrInvalidRequest, bonus, id, MaxPreferBonus)
		}
	}
	return nil
}

func validatePeers(peers []Peer) error {
	seen := make(map[string]bool, len(peers))
	requesters := 0
	for _, p := range peers {
		if p.ID == "" {
			return fmt.Errorf("%w: a peer without an id", ErrInvalidRequest)
		}
		if seen[p.ID] {
			return fmt.Errorf("%w: peer %s listed twice", ErrInvalidRequest, p.ID)
		}
		seen[p.ID] = true
		if p.Requester {
			requesters++
		}
	}
	if requesters > 1 {
		return fmt.Errorf("%w: %d peers marked as the requester", ErrInvalidRequest, requesters)
	}
	return nil
}
