// Package backend is the Go node's view of the Python backend process: a
// narrow Backend interface, its gRPC implementation over one long-lived
// connection (Dial), and a Supervisor that starts, health-checks, restarts and
// stops the Python process and serves the same interface.
//
// Errors from the backend keep their gRPC status codes (read them with
// status.Code, which sees through wrapping): INVALID_ARGUMENT for bad input,
// NOT_FOUND for an unknown model, UNAVAILABLE when the backend cannot serve,
// CANCELLED after Abort.
package backend

import (
	"context"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Backend is what the node asks of a backend.
type Backend interface {
	// Generate runs one generation and calls onToken for each streamed
	// response, in order; the last one carries finish reason, usage and
	// timings. An error from onToken ends the call and is returned. A request
	// with a Plan (req.Plan, see NewPlan) runs across the Ray cluster this
	// backend started with StartClusterHead instead of locally.
	Generate(ctx context.Context, req *pb.GenerateRequest, onToken func(*pb.GenerateResponse) error) error
	// Abort stops the running generation with this request id; false when
	// none was running.
	Abort(ctx context.Context, requestID string) (bool, error)
	// LoadModel prepares and loads a model, calling onProgress (may be nil)
	// as it works, and returns the loaded model's description.
	LoadModel(ctx context.Context, model string, onProgress func(*pb.LoadModelProgress)) (*pb.ModelInfo, error)
	// UnloadModel frees a loaded model.
	UnloadModel(ctx context.Context, model string) error
	// ListModels lists the models the backend can serve, loaded or not.
	ListModels(ctx context.Context) ([]*pb.ModelInfo, error)
	// Status reports the backend's version, device, memory and speed.
	Status(ctx context.Context) (*pb.StatusResponse, error)
	// StartClusterHead starts a Ray head with token authentication for a
	// session and makes this backend its driver (one at a time). The token
	// is never logged by either side.
	StartClusterHead(ctx context.Context, req *pb.StartClusterHeadRequest) (*pb.ClusterNode, error)
	// JoinCluster starts a Ray worker node that joins a session's head and
	// offers the request's peer resource.
	JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.ClusterNode, error)
	// LeaveCluster stops the Ray processes this backend started for the
	// session; false when it had none.
	LeaveCluster(ctx context.Context, sessionID string) (bool, error)
	// PrefixKeys returns the chained KV block keys of a prompt's full blocks,
	// as Generate would compute them, and the model's weights CID.
	PrefixKeys(ctx context.Context, req *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error)
	// HeldKeys lists the block keys the backend's KV store holds with a
	// sequence number above afterSeq (at most limit; 0 means 4096).
	HeldKeys(ctx context.Context, afterSeq uint64, limit uint32) (*pb.HeldKeysResponse, error)
	// BlockManifest returns a manifest of the leading keys the store holds.
	BlockManifest(ctx context.Context, req *pb.BlockManifestRequest) (*pb.BlockManifestResponse, error)
	// Close releases the backend; for a Supervisor it stops the process.
	Close() error
}
