package backend

import (
	"context"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// Generate implements Backend. A generation cut off by the backend dying
// fails with an error wrapping ErrExited and UNAVAILABLE; the next request
// goes to the restarted backend.
func (s *Supervisor) Generate(ctx context.Context, req *pb.GenerateRequest, onToken func(*pb.GenerateResponse) error) error {
	p, err := s.current(ctx)
	if err != nil {
		return err
	}
	return s.explain(ctx, p, "generation", p.client.Generate(ctx, req, onToken))
}

// Abort implements Backend.
func (s *Supervisor) Abort(ctx context.Context, requestID string) (bool, error) {
	p, err := s.current(ctx)
	if err != nil {
		return false, err
	}
	ok, err := p.client.Abort(ctx, requestID)
	return ok, s.explain(ctx, p, "abort", err)
}

// LoadModel implements Backend.
func (s *Supervisor) LoadModel(ctx context.Context, model string, onProgress func(*pb.LoadModelProgress)) (*pb.ModelInfo, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	info, err := p.client.LoadModel(ctx, model, onProgress)
	return info, s.explain(ctx, p, "model load", err)
}

// UnloadModel implements Backend.
func (s *Supervisor) UnloadModel(ctx context.Context, model string) error {
	p, err := s.current(ctx)
	if err != nil {
		return err
	}
	return s.explain(ctx, p, "model unload", p.client.UnloadModel(ctx, model))
}

// ListModels implements Backend.
func (s *Supervisor) ListModels(ctx context.Context) ([]*pb.ModelInfo, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	models, err := p.client.ListModels(ctx)
	return models, s.explain(ctx, p, "model listing", err)
}

// Status implements Backend.
func (s *Supervisor) Status(ctx context.Context) (*pb.StatusResponse, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	st, err := p.client.Status(ctx)
	return st, s.explain(ctx, p, "status", err)
}

// StartClusterHead implements Backend. A backend that restarts loses its
// clusters (the Python side stops every Ray process it started when it
// exits); callers see their later calls fail.
func (s *Supervisor) StartClusterHead(ctx context.Context, req *pb.StartClusterHeadRequest) (*pb.ClusterNode, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	n, err := p.client.StartClusterHead(ctx, req)
	return n, s.explain(ctx, p, "cluster head start", err)
}

// JoinCluster implements Backend.
func (s *Supervisor) JoinCluster(ctx context.Context, req *pb.JoinClusterRequest) (*pb.ClusterNode, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	n, err := p.client.JoinCluster(ctx, req)
	return n, s.explain(ctx, p, "cluster join", err)
}

// LeaveCluster implements Backend.
func (s *Supervisor) LeaveCluster(ctx context.Context, sessionID string) (bool, error) {
	p, err := s.current(ctx)
	if err != nil {
		return false, err
	}
	left, err := p.client.LeaveCluster(ctx, sessionID)
	return left, s.explain(ctx, p, "cluster leave", err)
}

// Close stops the backend in stages (UnloadModel best effort, SIGTERM, wait
// up to the stop timeout, SIGKILL) and any restart under way. It signals
// only processes this supervisor started. Later calls return nil.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait() // the watcher stops; a start under way is stopped by it
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop(s.cfg.stopTimeout, true)
}
