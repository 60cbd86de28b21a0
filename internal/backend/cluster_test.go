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

const testToken = "abababababababababababababababababababababababababababababababab"

// TestClusterRPCs drives the cluster RPCs of the real backend without
// starting Ray: bad input is INVALID_ARGUMENT without the token in the
// message, and an unknown session is left=false.
func TestClusterRPCs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real backend")
	}
	testutil.NoLeakedChildren(t)
	s := startReal(t)
	token := testToken // never started with: nothing of Ray runs here

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

}

// TestClusterHead: a Ray head started on loopback is stopped, process and
// all, by LeaveCluster. Ray listens on every interface and swaps a loopback
// node address for the machine's routable one, so the test re-runs itself in
// a network namespace whose only interface is loopback (root and iproute2;
// skipped otherwise, never run on the real network).
func TestClusterHead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real backend and a Ray head")
	}
	if !testutil.InNetNS(t) {
		testutil.RunTestInNetNS(t, testutil.NewNetNS(t), "TestClusterHead", 5*time.Minute)
		return
	}
	testutil.NoLeakedChildren(t)
	s := startReal(t)
	node, err := s.StartClusterHead(t.Context(), &pb.StartClusterHeadRequest{
		SessionId: "go-test", BindAddress: "127.0.0.1", Token: testToken})
	if err != nil {
		t.Fatalf("StartClusterHead: %v", err)
	}
	if !strings.HasPrefix(node.GetHeadAddress(), "127.0.0.1:") || node.GetPid() == 0 || node.GetSessionId() != "go-test" {
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
}
