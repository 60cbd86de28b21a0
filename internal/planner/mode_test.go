package planner

import (
	"testing"
	"time"
)

// TestChooseMode: the planner chooses prefill/decode when the whole
// request's expected latency says it pays against every one-peer plan (a
// long prompt and a much faster prefill peer, or the best decoder already
// sharing itself, with an answer long enough that the better decoder's
// tokens repay the handoff), and keeps the plain plan for short prompts, a
// fast prefill peer that answers a short answer alone sooner, equal peers,
// near-ties, split plans and a prompt the best decoder holds cached.
func TestChooseMode(t *testing.T) {
	prefiller := func(id string, prefill float64) Peer {
		return with(peer(id, 4*gb, 10, 10*time.Millisecond), func(p *Peer) { p.PrefillTokensPerS = prefill })
	}
	decoder := func(id string, prefill float64) Peer {
		return with(peer(id, 4*gb, 40, 10*time.Millisecond), func(p *Peer) { p.PrefillTokensPerS = prefill })
	}
	sharing := with(decoder("dec", 400), func(p *Peer) { p.ActiveSessions, p.MaxSessions = 3, 4 })
	long := Shape{PromptTokens: 1500, AnswerTokens: 64}
	cases := []struct {
		name   string
		peers  []Peer
		req    Request
		shape  Shape
		wantPD bool
		want   []string // stage peers
	}{
		{"long prompt, faster prefill peer: P/D", []Peer{prefiller("fast", 4000), decoder("dec", 200)},
			Request{Model: smolID}, long, true, []string{"fast", "dec"}},
		{"long prompt, best decoder busy with others: P/D", []Peer{prefiller("free", 400), sharing},
			Request{Model: smolID}, long, true, []string{"free", "dec"}},
		{"the faster prefill peer answers a short answer alone sooner than it hands over", []Peer{prefiller("fast", 4000), decoder("dec", 200)},
			Request{Model: smolID}, Shape{PromptTokens: 1500, AnswerTokens: 16}, false, []string{"dec"}},
		{"short prompt: one peer", []Peer{prefiller("fast", 4000), decoder("dec", 200)},
			Request{Model: smolID}, Shape{PromptTokens: 100, AnswerTokens: 16}, false, []string{"dec"}},
		{"equal peers: the handoff does not pay", []Peer{decoder("a", 400), decoder("b", 400)},
			Request{Model: smolID}, long, false, []string{"a"}},
		{"a near-tie keeps one peer", []Peer{prefiller("fast", 300), decoder("dec", 200)},
			Request{Model: smolID}, long, false, []string{"dec"}},
		{"the decoder holds the prompt cached", []Peer{prefiller("fast", 4000), decoder("dec", 200)},
			Request{Model: smolID}, Shape{PromptTokens: 1500, CachedTokens: 1488, AnswerTokens: 16}, false, []string{"dec"}},
		{"a split was asked for", []Peer{prefiller("fast", 4000), decoder("dec", 200)},
			Request{Model: smolID, Stages: 2}, long, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, pd, err := ChooseMode(tc.peers, tc.req, tc.shape)
			if err != nil {
				t.Fatal(err)
			}
			if pd != tc.wantPD {
				t.Fatalf("P/D %v, want %v (plan %+v)", pd, tc.wantPD, p.Stages)
			}
			if tc.want == nil {
				if len(p.Stages) != 2 || p.Stages[0].Start != 0 || p.Stages[1].Start == 0 {
					t.Fatalf("stages %+v; want the asked-for split", p.Stages)
				}
				return
			}
			if len(p.Stages) != len(tc.want) {
				t.Fatalf("stages %+v, want on %v", p.Stages, tc.want)
			}
			for i, s := range p.Stages {
				if s.PeerID != tc.want[i] || s.Start != 0 || s.End != smolL {
					t.Fatalf("stage %d %+v, want whole model on %s", i, s, tc.want[i])
				}
			}
		})
	}
}
