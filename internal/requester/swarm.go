package requester

import (
	"context"
	"time"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Swarm is the network a requester works over: NodeSwarm over a p2p node;
// fakes in tests.
type Swarm interface {
	// Discover lists the workers that can be planned now (reachable, with
	// their measured RTT in Peer.RTT), looking for at most timeout or until
	// ctx ends.
	Discover(ctx context.Context, timeout time.Duration) []planner.Peer
	// Join asks worker peerID to join the session req describes and waits
	// for its answer; ctx bounds only the join.
	Join(ctx context.Context, peerID string, req p2p.JoinRequest) (Member, error)
	// ReachableIP is the IP a Ray head binds to when the request names none.
	ReachableIP() string
}

// Member is a worker that joined a cluster: the address of its Ray node,
// the Ray resource naming it ("peer:<id>") and its session.
type Member struct {
	RayAddress   string
	ResourceName string
	Session      Session
}

// Session is a member's live session (a *p2p.SessionHandle).
type Session interface {
	// Lost is closed when the worker is gone without Leave having been
	// called; Err then says why.
	Lost() <-chan struct{}
	Err() error
	// Leave ends the session cleanly: the worker leaves the Ray cluster.
	Leave(ctx context.Context) error
}

// Every backend can host a head and compute a prompt's keys.
var (
	_ Head        = backend.Backend(nil)
	_ PromptKeyer = backend.Backend(nil)
)

// Head is the backend that hosts a cluster's Ray head and drives its
// pipeline: the part of backend.Backend a cluster uses.
type Head interface {
	StartClusterHead(ctx context.Context, req *pb.StartClusterHeadRequest) (*pb.ClusterNode, error)
	LeaveCluster(ctx context.Context, sessionID string) (bool, error)
	Generate(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error
	Abort(ctx context.Context, requestID string) (bool, error)
}
