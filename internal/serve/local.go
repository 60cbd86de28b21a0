package serve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgellm/edgellm/internal/backend"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// abortTimeout bounds the Abort sent for a generation whose caller left.
const abortTimeout = 5 * time.Second

// generateOn runs req on b and, when ctx ends before the stream does (the
// HTTP client disconnected, the socket's caller left, serve is stopping),
// sends the backend's Abort for it at once: cancelling the stream alone
// would also stop it, but Abort stops the engine within one token and says so
// in the backend's log.
func generateOn(ctx context.Context, b backend.Backend, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
			defer cancel()
			_, _ = b.Abort(actx, req.GetRequestId()) // best effort: the stream is cancelled anyway
		}
	}()
	err := b.Generate(ctx, req, onResp)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("generation %s stopped: %w", req.GetRequestId(), errors.Join(context.Cause(ctx), err))
	}
	return err
}

// warm loads model on b and generates one token, so the first request
// finds the weights loaded and the engine's code paths compiled; it returns
// the model's description.
func warm(ctx context.Context, b backend.Backend, model string) (*pb.ModelInfo, error) {
	info, err := b.LoadModel(ctx, model, nil)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", model, err)
	}
	one := int32(1)
	req := &pb.GenerateRequest{RequestId: "serve-warmup-" + model, Model: model,
		Input:    &pb.GenerateRequest_RawPrompt{RawPrompt: "Hello"},
		Sampling: &pb.SamplingParams{MaxTokens: &one}}
	if err := b.Generate(ctx, req, func(*pb.GenerateResponse) error { return nil }); err != nil {
		return nil, fmt.Errorf("warm %s up: %w", model, err)
	}
	return info, nil
}
