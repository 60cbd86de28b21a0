package requester

import (
	"context"
	"errors"
	"testing"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestDroppedWorkerIsPlannedWithout (a hostile member): the backend reports
// that the P/D prefill peer's handed-over blocks failed the decode peer's
// spot check; the cluster asks to be formed afresh and this requester's
// later plans leave that peer out. A report naming a peer outside the plan
// changes nothing.
func TestDroppedWorkerIsPlannedWithout(t *testing.T) {
	tests := []struct {
		name     string
		reported []string
		dropped  bool
	}{
		{"a peer outside the plan", []string{"C"}, false},
		{"the prefill peer", []string{"B"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := newFakeSwarm("A", "B", "C")
			h := &fakeHead{sw: sw}
			h.attempts = []attempt{func(_ context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
				return onResp(&pb.GenerateResponse{RequestId: req.GetRequestId(), TokenIds: []uint32{1},
					FinishReason: pb.FinishReason_FINISH_REASON_LENGTH, DroppedWorkers: tt.reported})
			}}
			r := New(sw)
			p, err := r.Plan(t.Context(), Request{Model: model, PrefillPeer: "B", DecodePeer: "A"})
			if err != nil {
				t.Fatal(err)
			}
			c, err := r.Form(t.Context(), h, p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Generate(t.Context(), &pb.GenerateRequest{RequestId: "r", Model: model}, func(*pb.GenerateResponse) error { return nil }); err != nil {
				t.Fatalf("Generate: %v (the answer itself stands)", err)
			}
			select {
			case <-c.Done():
				if !tt.dropped || !errors.Is(c.Err(), ErrUnavailable) {
					t.Fatalf("Done: %v; want it open", c.Err())
				}
			default:
				if tt.dropped {
					t.Fatal("Done still open; want the cluster formed afresh without the dropped peer")
				}
			}
			// Three workers were found; without B, a three-stage split has two.
			_, err = r.Plan(t.Context(), Request{Model: model, Stages: 3})
			if tt.dropped != errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("three-stage plan: %v; want refused (B left out): %v", err, tt.dropped)
			}
			_, err = r.Plan(t.Context(), Request{Model: model, PrefillPeer: "B", DecodePeer: "A"})
			if tt.dropped != errors.Is(err, ErrNotFound) {
				t.Fatalf("forced P/D on B: %v; want not found: %v", err, tt.dropped)
			}
		})
	}
}
