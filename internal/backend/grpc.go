package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

var _ Backend = (*grpcBackend)(nil)

// grpcBackend speaks to one backend over one long-lived gRPC connection, to
// each of its services: Inference, and the control of models, Ray clusters
// and KV blocks.
type grpcBackend struct {
	conn     *grpc.ClientConn
	infer    pb.InferenceClient
	models   pb.ModelControlClient
	clusters pb.ClusterControlClient
	kv       pb.KVControlClient
	health   healthpb.HealthClient
}

// Dial returns a Backend for an already running backend at addr
// (unix:/abs/path.sock or host:port). The connection is made lazily and
// re-made after failures; nothing is sent until the first call.
func Dial(addr string) (Backend, error) {
	return dial(addr)
}

func dial(addr string) (*grpcBackend, error) {
	// Reconnect quickly: the peer is a local process that may be starting.
	params := grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
		MinConnectTimeout: 5 * time.Second,
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(params),
	)
	if err != nil {
		return nil, fmt.Errorf("backend at %s: %w", addr, err)
	}
	return &grpcBackend{
		conn:     conn,
		infer:    pb.NewInferenceClient(conn),
		models:   pb.NewModelControlClient(conn),
		clusters: pb.NewClusterControlClient(conn),
		kv:       pb.NewKVControlClient(conn),
		health:   healthpb.NewHealthClient(conn),
	}, nil
}

// Generate implements Backend.
func (b *grpcBackend) Generate(ctx context.Context, req *pb.GenerateRequest, onToken func(*pb.GenerateResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when onToken fails
	stream, err := b.infer.Generate(ctx, req)
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := onToken(resp); err != nil {
			return err
		}
	}
}

// Abort implements Backend.
func (b *grpcBackend) Abort(ctx context.Context, requestID string) (bool, error) {
	resp, err := b.infer.Abort(ctx, &pb.AbortRequest{RequestId: requestID})
	if err != nil {
		return false, err
	}
	return resp.GetAborted(), nil
}

// LoadModel implements Backend.
func (b *grpcBackend) LoadModel(ctx context.Context, model string, onProgress func(*pb.LoadModelProgress)) (*pb.ModelInfo, error) {
	stream, err := b.models.LoadModel(ctx, &pb.LoadModelRequest{Model: model})
	if err != nil {
		return nil, err
	}
	var info *pb.ModelInfo
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if p.GetModel() != nil {
			info = p.GetModel()
		}
		if onProgress != nil {
			onProgress(p)
		}
	}
	if info == nil {
		return nil, fmt.Errorf("load %s: backend sent no model description", model)
	}
	return info, nil
}

// UnloadModel implements Backend.
func (b *grpcBackend) UnloadModel(ctx context.Context, model string) error {
	_, err := b.models.UnloadModel(ctx, &pb.UnloadModelRequest{Model: model})
	return err
}

// ListModels implements Backend.
func (b *grpcBackend) ListModels(ctx context.Context) ([]*pb.ModelInfo, error) {
	resp, err := b.models.ListModels(ctx, &pb.ListModelsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetModels(), nil
}

// Status implements Backend.
func (b *grpcBackend) Status(ctx context.Context) (*pb.StatusResponse, error) {
	return b.models.Status(ctx, &pb.StatusRequest{})
}

// StartClusterHead implements Backend.
func (b *grpcBackend) StartClusterHead(ctx context.Context, req *pb.StartClusterHeadRequest) (*pb.ClusterNode, error) {
	resp, err := b.clusters.StartClusterHead(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetNode(), nil
}

// JoinCluster implements Backend.
func (b *grpcBackend) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.ClusterNode, error) {
	resp, err := b.clusters.JoinCluster(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetNode(), nil
}

// LeaveCluster implements Backend.
func (b *grpcBackend) LeaveCluster(ctx context.Context, sessionID string) (bool, error) {
	resp, err := b.clusters.LeaveCluster(ctx, &pb.LeaveClusterRequest{SessionId: sessionID})
	if err != nil {
		return false, err
	}
	return resp.GetLeft(), nil
}

// serving asks the standard health service whether the backend is SERVING.
func (b *grpcBackend) serving(ctx context.Context) (bool, error) {
	resp, err := b.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return false, err
	}
	return resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, nil
}

// Close implements Backend; it closes the connection only.
func (b *grpcBackend) Close() error {
	return b.conn.Close()
}
