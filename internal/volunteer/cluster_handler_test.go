package volunteer

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// fakeClusterBackend records the cluster calls; other methods are not used.
type fakeClusterBackend struct {
	Backend
	join    *pb.JoinClusterRequest
	joinErr error
	left    []string
}

func (f *fakeClusterBackend) JoinCluster(_ context.Context, req *pb.JoinClusterRequest) (*pb.ClusterNode, error) {
	f.join = req
	if f.joinErr != nil {
		return nil, f.joinErr
	}
	return &pb.ClusterNode{SessionId: req.GetSessionId(), Pid: 42}, nil
}

func (f *fakeClusterBackend) LeaveCluster(_ context.Context, id string) (bool, error) {
	f.left = append(f.left, id)
	return true, nil
}

func TestClusterHandler(t *testing.T) {
	var logs strings.Builder
	f := &fakeClusterBackend{}
	h := &clusterHandler{b: f, bindIP: "127.0.0.1", log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	s := p2p.Session{JoinRequest: p2p.JoinRequest{SessionID: p2p.NewSessionID(), Model: "m", WeightsCID: "c",
		Layers: p2p.LayerRange{Start: 0, End: 10}, HeadAddress: "127.0.0.1:6379", RayToken: p2p.NewRayToken()},
		ResourceName: "peer:me"}
	res, err := h.Join(t.Context(), s)
	if err != nil || res.RayAddress != "127.0.0.1" {
		t.Fatalf("Join = %+v, %v", res, err)
	}
	j := f.join
	if j.GetSessionId() != s.SessionID.String() || j.GetToken() != s.RayToken.Hex() || j.GetHeadAddress() != "127.0.0.1:6379" ||
		j.GetPeerResource() != "peer:me" || j.GetBindAddress() != "127.0.0.1" {
		t.Errorf("JoinClusterRequest = %v", j)
	}
	if err := h.Leave(t.Context(), s.SessionID); err != nil || len(f.left) != 1 || f.left[0] != s.SessionID.String() {
		t.Errorf("Leave: %v, left %v", err, f.left)
	}

	// A failure that echoes the token reaches neither the requester nor the log with it.
	f.joinErr = status.Error(codes.Unavailable, "ray refused token "+s.RayToken.Hex())
	_, err = h.Join(t.Context(), s)
	if err == nil || strings.Contains(err.Error(), s.RayToken.Hex()) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("Join error = %v; want it redacted", err)
	}
	if strings.Contains(logs.String(), s.RayToken.Hex()) {
		t.Errorf("token in the log: %s", logs.String())
	}
}
