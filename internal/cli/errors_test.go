package cli

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/internal/requester"
)

func TestExitCodeAndMessage(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "error reading from server: EOF")
	tests := []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "max_tokens must be between 1 and 8184 for this prompt, got 0"),
			ExitUsage, "invalid argument: max_tokens must be between 1 and 8184 for this prompt, got 0"},
		{"not found", status.Error(codes.NotFound, "unknown model 'x'"), ExitNotFound, "not found: unknown model 'x'"},
		{"unavailable", unavailable, ExitUnavailable, "backend unavailable: error reading from server: EOF"},
		{"backend exited", fmt.Errorf("%w during generation (signal: killed): %w", backend.ErrExited, unavailable),
			ExitUnavailable, "backend unavailable: backend exited during generation (signal: killed): error reading from server: EOF"},
		{"start failed", fmt.Errorf("%w (backend log /d/logs/backend.log)", &backend.StartError{
			Err:  fmt.Errorf("%w: exited before serving: exit status 1", backend.ErrStartFailed),
			Tail: []string{"Traceback (most recent call last):", "ModuleNotFoundError: No module named 'torch'", ""}}),
			ExitUnavailable, "backend unavailable: backend failed to start: exited before serving: exit status 1: " +
				"ModuleNotFoundError: No module named 'torch' (backend log /d/logs/backend.log)"},
		{"gave up", fmt.Errorf("%w: 5 restarts in the last minute", backend.ErrGaveUp), ExitUnavailable,
			"backend keeps exiting, not restarting: 5 restarts in the last minute"},
		{"usage", fmt.Errorf("%w: unknown flag: --bogus", ErrUsage), ExitUsage, "usage: unknown flag: --bogus"},
		{"empty prompt", fmt.Errorf("%w: empty prompt", ErrInvalidArgument), ExitUsage, "invalid argument: empty prompt"},
		{"interrupted", fmt.Errorf("%w: generation aborted", ErrInterrupted), ExitInterrupted, "interrupted"},
		{"interrupted beats the backend's cancel", fmt.Errorf("%w: %w", ErrInterrupted, status.Error(codes.Canceled, "aborted")),
			ExitInterrupted, "interrupted"},
		{"multi-line backend message", status.Error(codes.Internal, "boom\n  at line 3\n"), ExitFailure, "backend error: boom; at line 3"},
		{"swarm: model nobody serves", fmt.Errorf("%w: model not served: no peer serves x (2 workers found)", requester.ErrNotFound),
			ExitNotFound, "not found: model not served: no peer serves x (2 workers found)"},
		{"swarm: worker lost", fmt.Errorf("%w: worker A (layers [0,15)) was lost after 3 tokens; gave up after 2 failovers", requester.ErrUnavailable),
			ExitUnavailable, "unavailable: worker A (layers [0,15)) was lost after 3 tokens; gave up after 2 failovers"},
		{"swarm: different weights", fmt.Errorf("%w: the prefill and decode peers hold different weights", requester.ErrInvalidRequest),
			ExitUsage, "invalid argument: the prefill and decode peers hold different weights"},
		{"swarm: too many stages", planError(fmt.Errorf("%w: 3 stages, 2 workers", planner.ErrTooManyStages)),
			ExitUsage, "usage: too many stages: 3 stages, 2 workers"},
		{"swarm: cancelled", fmt.Errorf("%w: while looking for workers: %w", requester.ErrCancelled, context.Canceled),
			ExitInterrupted, "cancelled: while looking for workers: context canceled"},
		{"other", context.DeadlineExceeded, ExitFailure, "context deadline exceeded"},
		{"plain error mentioning a code", errors.New("code = NotFound"), ExitFailure, "code = NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.err); got != tt.code {
				t.Errorf("ExitCode = %d, want %d", got, tt.code)
			}
			if got := Message(tt.err); got != tt.msg {
				t.Errorf("Message =\n  %q\nwant\n  %q", got, tt.msg)
			}
		})
	}
	if ExitCode(nil) != ExitOK || Message(nil) != "" {
		t.Error("nil error: want exit 0 and no message")
	}
}
