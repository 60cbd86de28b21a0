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
