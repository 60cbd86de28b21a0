package volunteer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// clusterHandler is the worker's p2p.SessionHandler: an accepted join of the
// /edgellm/cluster/1.0.0 protocol becomes the backend's JoinCluster (a Ray
// worker node bound to bindIP that offers the resource "peer:<this peer>"),
// and the session's end becomes LeaveCluster, which stops exactly the Ray
// processes that join started. The backend's session id is the p2p session
// id in hex.
//
// The Ray token goes to the backend only; it is never logged, and an error
// sent back to the requester is scrubbed of it in case a layer below echoes
// its input.
type clusterHandler struct {
	b      Backend
	bindIP string // the IP the requester's Ray head reaches this machine on
	log    *slog.Logger
}

var _ p2p.SessionHandler = (*clusterHandler)(nil)

// Join implements p2p.SessionHandler.
func (h *clusterHandler) Join(ctx context.Context, s p2p.Session) (p2p.JoinResult, error) {
	token := s.RayToken.Hex()
	node, err := h.b.JoinCluster(ctx, &pb.JoinClusterRequest{
		SessionId: s.SessionID.String(), HeadAddress: s.HeadAddress, Token: token,
		PeerResource: s.ResourceName, BindAddress: h.bindIP,
		// Loaded first if it is not (several models within a memory budget),
		// and held while the session lasts.
		Model: s.Model,
	})
	if err != nil {
		msg := strings.ReplaceAll(backend.Message(err), token, "[redacted]")
		h.log.Warn("cluster join failed", "session", s.SessionID, "requester", s.Peer, "err", msg)
		return p2p.JoinResult{}, fmt.Errorf("ray join: %s", msg)
	}
	h.log.Info("joined cluster", "session", s.SessionID, "requester", s.Peer, "model", s.Model, "head", s.HeadAddress,
		"layers", fmt.Sprintf("[%d,%d)", s.Layers.Start, s.Layers.End), "ray_pid", node.GetPid())
	return p2p.JoinResult{RayAddress: h.bindIP}, nil
}

// Leave implements p2p.SessionHandler.
func (h *clusterHandler) Leave(ctx context.Context, id p2p.SessionID) error {
	left, err := h.b.LeaveCluster(ctx, id.String())
	if err != nil {
		return fmt.Errorf("ray leave: %s", backend.Message(err))
	}
	h.log.Info("left cluster", "session", id, "had_cluster", left)
	return nil
}
