package requester

import (
	"context"
	"testing"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestMeasuredSpeedRanksPeers (lying capability records): a worker whose
// record claims a huge decode speed wins the first plan; once it has served
// this requester at the speed it really has, the next plan ranks it by that
// and picks the honest worker.
func TestMeasuredSpeedRanksPeers(t *testing.T) {
	sw := newFakeSwarm("honest", "liar")
	sw.peers[1].DecodeTokensPerS = 1e5 // the claim
	h := &fakeHead{sw: sw}
	slow := func(_ context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		return onResp(&pb.GenerateResponse{RequestId: req.GetRequestId(), TokenIds: []uint32{1},
			FinishReason: pb.FinishReason_FINISH_REASON_LENGTH, Timings: &pb.Timings{DecodeTokensPerS: 2}})
	}
	h.attempts = []attempt{slow}
	r := New(sw)
	p, err := r.Plan(t.Context(), Request{Model: model})
	if err != nil || p.Plan.Stages[0].PeerID != "liar" {
		t.Fatalf("first plan %+v, %v; want the liar's claim to win it", p, err)
	}
	c, err := r.Form(t.Context(), h, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Generate(t.Context(), &pb.GenerateRequest{RequestId: "r", Model: model}, func(*pb.GenerateResponse) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c.Close()
	p, err = r.Plan(t.Context(), Request{Model: model})
	if err != nil || p.Plan.Stages[0].PeerID != "honest" {
		t.Fatalf("second plan %+v, %v; want the honest worker once the liar was measured", p.Plan, err)
	}
}
