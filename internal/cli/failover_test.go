package cli

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
)

// TestMaybeLoss: which generation failures wait for a session to report its
// worker lost before failing over (the end-to-end path is
// TestDistributedFailover).
func TestMaybeLoss(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "a stage failed: ActorDiedError"), true},
		{fmt.Errorf("generate: %w", status.Error(codes.Internal, "stream broke")), true},
		{status.Error(codes.Unknown, "?"), true},
		{status.Error(codes.InvalidArgument, "max_tokens"), false},
		{status.Error(codes.Canceled, "aborted"), false},
		{status.Error(codes.NotFound, "model"), false},
		{errors.New("plain"), false},
		{fmt.Errorf("x: %w", &workerLost{&p2p.SessionHandle{}}), true},
	}
	for _, tt := range tests {
		if got := maybeLoss(tt.err); got != tt.want {
			t.Errorf("maybeLoss(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestFailoverWording(t *testing.T) {
	if plural(1, "token") != "1 token" || plural(0, "token") != "0 tokens" || plural(7, "token") != "7 tokens" {
		t.Error("plural")
	}
	c := &clusterRun{plan: planner.Plan{Stages: []planner.Stage{{PeerID: "A", Start: 0, End: 15}, {PeerID: "B", Start: 15, End: 30}}}}
	if got := c.describe([]int{1}); got != "worker B (layers [15,30))" {
		t.Errorf("describe = %q", got)
	}
	if got := c.describe([]int{0, 1}); got != "worker A (layers [0,15)) and worker B (layers [15,30))" {
		t.Errorf("describe = %q", got)
	}
}
