// Package inferencerpc serves the backend's Inference gRPC service (Generate,
// Abort; proto/edgellm/v1/inference.proto) in front of a generator in the Go
// node, on a unix socket only this user can open. `edgellm serve` puts its
// router behind it, so `edgellm infer` streams through a running serve with
// the same client, output and exit codes as through a backend.
//
// Decisions:
//   - Errors keep their gRPC status; a generator error without one becomes
//     UNKNOWN with its text, and the caller's leaving or Abort is CANCELLED.
//   - Request ids are the callers' (an empty one gets a fresh id); a second
//     running request with the same id is refused (ALREADY_EXISTS), so Abort
//     always names one generation.
//   - Shutdown refuses new generations (UNAVAILABLE) and cancels the running
//     ones; the gRPC server's GracefulStop then ends.
package inferencerpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Generator runs one generation; onResp gets every response in order. When
// ctx ends it must stop the generation.
type Generator func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error

// errAborted ends a generation stopped by Abort; errClosing one cut by
// Shutdown.
var (
	errAborted = errors.New("aborted")
	errClosing = errors.New("the node is stopping")
)

// Server is the Inference service over a Generator.
type Server struct {
	pb.UnimplementedInferenceServer
	gen Generator

	mu       sync.Mutex
	running  map[string]context.CancelCauseFunc // by request id
	shutdown bool
}

// New serves gen.
func New(gen Generator) *Server {
	return &Server{gen: gen, running: map[string]context.CancelCauseFunc{}}
}

// Generate implements pb.InferenceServer.
func (s *Server) Generate(req *pb.GenerateRequest, stream grpc.ServerStreamingServer[pb.GenerateResponse]) error {
	if req.GetRequestId() == "" {
		req.RequestId = newRequestID()
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	if err := s.begin(req.GetRequestId(), cancel); err != nil {
		return err
	}
	defer s.end(req.GetRequestId())
	err := s.gen(ctx, req, stream.Send)
	if err != nil && ctx.Err() != nil {
		return ctxStatus(ctx)
	}
	return toStatus(err)
}

// Abort implements pb.InferenceServer: it cancels a running generation.
func (s *Server) Abort(_ context.Context, req *pb.AbortRequest) (*pb.AbortResponse, error) {
	s.mu.Lock()
	cancel, ok := s.running[req.GetRequestId()]
	s.mu.Unlock()
	if ok {
		cancel(errAborted)
	}
	return &pb.AbortResponse{Aborted: ok}, nil
}

// Shutdown refuses new generations and cancels the running ones.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = true
	for _, cancel := range s.running {
		cancel(errClosing)
	}
}

func (s *Server) begin(id string, cancel context.CancelCauseFunc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return status.Error(codes.Unavailable, errClosing.Error())
	}
	if _, dup := s.running[id]; dup {
		return status.Errorf(codes.AlreadyExists, "request id %q is already running", id)
	}
	s.running[id] = cancel
	return nil
}

func (s *Server) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.running, id)
}

// ctxStatus is the status of a generation whose context ended.
func ctxStatus(ctx context.Context) error {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errAborted):
		return status.Error(codes.Canceled, "aborted")
	case errors.Is(cause, errClosing):
		return status.Error(codes.Unavailable, errClosing.Error())
	default:
		return status.FromContextError(ctx.Err()).Err()
	}
}

// toStatus keeps a status error's code (status.Code sees through wrapping)
// with the whole error's text.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(status.Code(err), err.Error())
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "rpc-" + hex.EncodeToString(b[:])
}

// ListenUnix listens on a fresh unix socket at path that only this user may
// connect to (created 0600 under a umask of 0177).
func ListenUnix(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	old := syscall.Umask(0o177)
	lis, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return lis, nil
}

// Stop stops srv gracefully, cutting what still runs after grace.
func Stop(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
		<-done
	}
}
