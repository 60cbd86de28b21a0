package requester

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/internal/planner"
)

// TestPrefer: a cached prefix found in the swarm moves the plan to the
// worker holding it when the workers are otherwise equal; no holder among
// the workers, no cached tokens, or a P/D request keep the plan.
func TestPrefer(t *testing.T) {
	a, b := peer.ID("A").String(), peer.ID("B").String() // as records name workers
	r := New(newFakeSwarm(a, b))
	holdsB := Prefix{Holders: []peer.ID{"B"}, Blocks: 20, Tokens: 320}
	tests := []struct {
		name   string
		req    Request
		prefix Prefix
		want   string // the stage's peer
	}{
		{"no prefix: the first of equals", Request{Model: model}, Prefix{}, a},
		{"B holds the prefix", Request{Model: model}, holdsB, b},
		{"holder not a worker", Request{Model: model}, Prefix{Holders: []peer.ID{"Z"}, Tokens: 320}, a},
		{"P/D is forced", Request{Model: model, PrefillPeer: a, DecodePeer: b}, holdsB, a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			planned, err := r.Plan(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := r.Prefer(planned, tt.prefix, 8)
			if id := got.Plan.Stages[0].PeerID; id != tt.want {
				t.Fatalf("first stage on %s, want %s", id, tt.want)
			}
			if tt.want == b && got.Prefer[b] <= 0 {
				t.Fatalf("preference %v; want a bonus for B", got.Prefer)
			}
		})
	}
}

// TestChooseMode: the requester turns the planner's P/D choice into a P/D
// request (roles and failover follow PrefillPeer/DecodePeer); NoPD and a
// forced P/D request keep the plan.
func TestChooseMode(t *testing.T) {
	fast, dec := peer.ID("F").String(), peer.ID("D").String()
	sw := newFakeSwarm(fast, dec)
	sw.mu.Lock()
	for i := range sw.peers {
		if sw.peers[i].ID == fast {
			sw.peers[i].PrefillTokensPerS, sw.peers[i].DecodeTokensPerS = 4000, 10
		} else {
			sw.peers[i].PrefillTokensPerS = 200
		}
	}
	sw.mu.Unlock()
	r := New(sw)
	long := planner.Shape{PromptTokens: 1500, AnswerTokens: 64} // the answer repays the handoff
	tests := []struct {
		name   string
		req    Request
		wantPD bool
	}{
		{"long prompt, faster prefill peer", Request{Model: model}, true},
		{"--no-pd", Request{Model: model, NoPD: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			planned, err := r.Plan(t.Context(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := r.ChooseMode(planned, long)
			if got.Request.disaggregated() != tt.wantPD {
				t.Fatalf("P/D %v, want %v (stages %+v)", got.Request.disaggregated(), tt.wantPD, got.Plan.Stages)
			}
			if tt.wantPD && (got.Request.PrefillPeer != fast || got.Request.DecodePeer != dec || len(got.Plan.Stages) != 2) {
				t.Fatalf("request %+v, stages %+v; want prefill on F, decode on D", got.Request, got.Plan.Stages)
			}
		})
	}
}
