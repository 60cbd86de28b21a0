package backend

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMessage(t *testing.T) {
	unavailable := status.Error(codes.Unavailable, "error reading from server: EOF")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"invalid argument", status.Error(codes.InvalidArgument, "max_tokens must be between 1 and 8184"),
			"invalid argument: max_tokens must be between 1 and 8184"},
		{"wrapped status", fmt.Errorf("ray join: %w", status.Error(codes.NotFound, "unknown model 'x'")),
			"not found: ray join: unknown model 'x'"},
		{"exited", fmt.Errorf("%w during generation (signal: killed): %w", ErrExited, unavailable),
			"backend unavailable: backend exited during generation (signal: killed): error reading from server: EOF"},
		{"start failed", fmt.Errorf("%w (backend log /d/logs/backend.log)", &StartError{
			Err:  fmt.Errorf("%w: exited before serving: exit status 1", ErrStartFailed),
			Tail: []string{"Traceback (most recent call last):", "ModuleNotFoundError: No module named 'torch'", ""}}),
			"backend unavailable: backend failed to start: exited before serving: exit status 1: " +
				"ModuleNotFoundError: No module named 'torch' (backend log /d/logs/backend.log)"},
		{"multi-line", status.Error(codes.Internal, "boom\n  at line 3\n"), "backend error: boom; at line 3"},
		{"plain", context.DeadlineExceeded, "context deadline exceeded"},
		{"plain mentioning a code", errors.New("code = NotFound"), "code = NotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Message(tt.err); got != tt.want {
				t.Errorf("Message =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}
