package planner

import (
	"errors"
	"testing"
	"time"
)

// TestPrefer: KV-aware routing. A bonus moves the plan to a peer holding the
// cached prefix when it outweighs the latency difference, never past the
// request's limits, and never changes the expected latency.
func TestPrefer(t *testing.T) {
	a := peer("a", 4*gb, 40, 10*time.Millisecond)
	b := peer("b", 4*gb, 40, 14*time.Millisecond)
	small := peer("small", smolBytes/2, 40, time.Millisecond) // holds half the model
	busy := with(peer("busy", 4*gb, 40, time.Millisecond), func(p *Peer) { p.ActiveSessions = 1 })
	twin := peer("twin", 4*gb, 40, 10*time.Millisecond) // a's equal
	holds := map[string]time.Duration{"twin": PrefixBonus(320, 500, 8)}
	cases := []struct {
		name   string
		peers  []Peer
		req    Request
		want   []string // stage peers in order
		wantMs int64    // expected latency in ms
	}{
		{"no preference: the faster", []Peer{a, b}, Request{Model: smolID}, []string{"a"}, 35},
		{"equal peers, no preference", []Peer{a, twin}, Request{Model: smolID}, []string{"a"}, 35},
		{"equal peers: the prefix holder", []Peer{a, twin}, Request{Model: smolID, Prefer: holds}, []string{"twin"}, 35},
		{"equal peers listed the other way: the prefix holder", []Peer{twin, a}, Request{Model: smolID, Prefer: holds}, []string{"twin"}, 35},
		{"bonus over the gap", []Peer{a, b}, Request{Model: smolID, Prefer: map[string]time.Duration{"b": 5 * time.Millisecond}}, []string{"b"}, 39},
		{"bonus under the gap", []Peer{a, b}, Request{Model: smolID, Prefer: map[string]time.Duration{"b": 3 * time.Millisecond}}, []string{"a"}, 35},
		{"limit still holds", []Peer{a, b}, Request{Model: smolID, MaxTokenLatency: 36 * time.Millisecond,
			Prefer: map[string]time.Duration{"b": 500 * time.Millisecond}}, []string{"a"}, 35},
		{"unknown and busy peers ignored", []Peer{a, b, busy}, Request{Model: smolID,
			Prefer: map[string]time.Duration{"nobody": time.Second, "busy": time.Second}}, []string{"a"}, 35},
		{"two stages include the holder", []Peer{a, b, small}, Request{Model: smolID, Stages: 2,
			Prefer: map[string]time.Duration{"b": 50 * time.Millisecond}}, nil, 0},
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
			if tc.want == nil { // only: the preferred peer runs a stage
				found := false
				for _, id := range got {
					found = found || id == "b"
				}
				if !found {
					t.Fatalf("stages on %v, none on the preferred peer", got)
				}
				plain := tc.req
				plain.Prefer = nil
				if q, _ := Choose(tc.peers, plain); q.Stages[0].PeerID == "b" || q.Stages[1].PeerID == "b" {
					t.Fatal("the preferred peer is chosen even without the preference: the case tests nothing")
				}
				return
			}
			if len(got) != len(tc.want) || got[0] != tc.want[0] {
				t.Fatalf("stages on %v, want %v", got, tc.want)
			}
			if ms := p.ExpectedTokenLatency.Milliseconds(); ms != tc.wantMs {
				t.Fatalf("expected latency %d ms, want %d (a bonus must not change it)", ms, tc.wantMs)
			}
		})
	}
}

func TestPreferInvalid(t *testing.T) {
	peers := []Peer{peer("a", 4*gb, 40, 10*time.Millisecond)}
	for _, bonus := range []time.Duration{-time.Millisecond, MaxPreferBonus + 1} {
		_, err := Choose(peers, Request{Model: smolID, Prefer: map[string]time.Duration{"a": bonus}})
		if !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("bonus %v: %v", bonus, err)
		}
	}
}

func TestPrefixBonus(t *testing.T) {
	cases := []struct {
		cached  int
		speed   float64
		answer  int
		want    time.Duration
		comment string
	}{
		{0, 500, 8, 0, "nothing cached"},
		{-5, 500, 8, 0, "nonsense count"},
		{320, 500, 8, 80 * time.Millisecond, "0.64 s saved over 8 tokens"},
		{320, 500, 0, 640 * time.Millisecond, "no answer length: one token"},
		{320, 0, 8, MaxPreferBonus, "unmeasured speed: capped"},
		{1 << 20, 1e9, 1, 1048576 * time.Nanosecond, "fast peer"},
	}
	for _, tc := range cases {
		if got := PrefixBonus(tc.cached, tc.speed, tc.answer); got != tc.want {
			t.Errorf("%s: PrefixBonus(%d, %v, %d) = %v, want %v", tc.comment, tc.cached, tc.speed, tc.answer, got, tc.want)
		}
	}
}
