package planner

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// TestLoad: a peer that must load the model first pays its load, spread over
// the answer's tokens, in the plan's rank; the plan says how long it waits.
func TestLoad(t *testing.T) {
	unloaded := func(load time.Duration) func(*Peer) {
		return func(p *Peer) {
			for i := range p.Models {
				p.Models[i].Unloaded, p.Models[i].LoadTime = true, load
			}
		}
	}
	a := peer("a", 4*gb, 40, 10*time.Millisecond)                                          // 35 ms per token
	b := with(peer("b", 4*gb, 40, 10*time.Millisecond), unloaded(2*time.Second))           // a's equal, cold
	fast := with(peer("fast", 4*gb, 40, 6*time.Millisecond), unloaded(2*time.Second))      // 4 ms faster, cold
	guess := with(peer("guess", 4*gb, 40, 6*time.Millisecond), unloaded(0))                // cold, no load time
	half := with(peer("half", smolBytes*3/4, 80, time.Millisecond), unloaded(time.Second)) // half the model, cold
	small := peer("small", smolBytes*3/4, 80, time.Millisecond)
	weights := float64(smolBytes)
	estimate := LoadBaseTime + time.Duration(weights/LoadBytesPerS*float64(time.Second))
	cases := []struct {
		name     string
		peers    []Peer
		req      Request
		want     []string // stage peers in order
		wantLoad time.Duration
	}{
		{"equal peers: the loaded one", []Peer{b, a}, Request{Model: smolID}, []string{"a"}, 0},
		{"a short answer: the loaded one", []Peer{a, fast}, Request{Model: smolID, AnswerTokens: 100}, []string{"a"}, 0},
		{"a long answer: the faster one, after its load", []Peer{a, fast}, Request{Model: smolID, AnswerTokens: 1000}, []string{"fast"}, 2 * time.Second},
		{"only a cold peer serves it", []Peer{b}, Request{Model: smolID}, []string{"b"}, 2 * time.Second},
		{"no load time in the record: estimated from the size", []Peer{guess}, Request{Model: smolID}, []string{"guess"}, estimate},
		{"estimated load against a loaded peer", []Peer{a, guess}, Request{Model: smolID, AnswerTokens: 10_000}, []string{"guess"}, estimate},
		{"a split waits for its cold stage", []Peer{half, small}, Request{Model: smolID, Stages: 2}, nil, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Choose(tc.peers, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			checkPlan(t, tc.peers, tc.req, p)
			var got []string
			for _, s := range p.Stages {
				got = append(got, s.PeerID)
			}
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Errorf("stages on %v, want %v", got, tc.want)
			}
			if p.LoadTime != tc.wantLoad {
				t.Errorf("load time %v, want %v", p.LoadTime, tc.wantLoad)
			}
		})
	}
	if _, err := Choose([]Peer{a}, Request{Model: smolID, AnswerTokens: -1}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("negative answer tokens: %v, want ErrInvalidRequest", err)
	}
}
