package backend

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/testutil"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// TestClusterRPCs drives the cluster RPCs of the real backend: bad input is
// INVALID_ARGUMENT without the token in the message, an unknown session is
// left=false, and a head started on loopback is stopped, process and all, by
// LeaveCluster.
func TestClusterRPCs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real backend and a Ray head")
	}
	testutil.NoLeakedChildren(t)
	s := startReal(t)
	token := strings.Repeat("ab", 32)

	t.Run("leave unknown session", func(t *testing.T) {
		left, err := s.LeaveCluster(t.Context(), "no-such-session")
		if err != nil || left {
			t.Fatalf("LeaveCluster = %v, %v; want false, nil", left, err)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		_, err := s.StartClusterHead(t.Context(), &pb.StartClusterHeadRequest{
			SessionId: "s", BindAddress: "127.0.0.1", Token: "short"})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("StartClusterHead with a short token: %v, want INVALID_ARGUMENT", err)
		}
		bad := &pb.StartClusterHeadRequest{SessionId: "s", BindAddress: "0.0.0.0", Token: token}
		_, err = s.StartClusterHead(t.Context(), bad)
		if status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), token) {
			t.Errorf("StartClusterHead on a wildcard: %v, want INVALID_ARGUMENT without the token", err)
		}
		_, err = s.JoinCluster(t.Context(), &pb.JoinClusterRequest{SessionId: "s", HeadAddress: "nowhere",
			Token: token, PeerResource: "peer:a", BindAddress: "127.0.0.1"})
		if status.Code(err) != codes.InvalidArgument || strings.Contains(err.Error(), token) {
			t.Errorf("JoinCluster to a bad head address: %v, want INVALID_ARGUMENT without the token", err)
		}
		req := greedy("hi", 4)
		req.Plan = NewPlan("no-such-session", []PlanStage{{Resource: "peer:a", Start: 0, End: 30, WeightsCID: "bafk"}})
		if _, err := generateText(t.Context(), s, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Generate with a plan for an unknown session: %v, want INVALID_ARGUMENT", err)
		}
	})

	t.Run("head starts and leaves", func(t *testing.T) {
		node, err := s.StartClusterHead(t.Context(), &pb.StartClusterHeadRequest{
			SessionId: "go-test", BindAddress: "127.0.0.1", Token: token})
		if err != nil {
			t.Fatalf("StartClusterHead: %v", err)
		}
		if node.GetHeadAddress() == "" || node.GetPid() == 0 || node.GetSessionId() != "go-test" {
			t.Fatalf("StartClusterHead = %v; want an address and a pid", node)
		}
		if !testutil.Alive(int(node.GetPid())) {
			t.Fatalf("ray pid %d not running", node.GetPid())
		}
		left, err := s.LeaveCluster(t.Context(), "go-test")
		if err != nil || !left {
			t.Fatalf("LeaveCluster = %v, %v; want true", left, err)
		}
		testutil.WaitExit(t, int(node.GetPid()), 30*time.Second)
		if left, err := s.LeaveCluster(t.Context(), "go-test"); err != nil || left {
			t.Errorf("second LeaveCluster = %v, %v; want false", left, err)
		}
	})
}
