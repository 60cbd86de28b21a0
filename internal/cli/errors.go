package cli

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/linetail"
)

// Exit codes; the root command's help lists them.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitUnavailable = 4
	ExitInterrupted = 130
)

var (
	// ErrUsage reports a command line that does not parse: unknown command
	// or flag, bad flag value, wrong number of arguments.
	ErrUsage = errors.New("usage")
	// ErrInvalidArgument reports input the node rejects before asking the
	// backend, e.g. an empty prompt.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrInterrupted reports a command stopped by Ctrl-C or SIGTERM.
	ErrInterrupted = errors.New("interrupted")
)

// grpcStatus finds the gRPC status an error wraps.
func grpcStatus(err error) (interface {
	error
	GRPCStatus() *status.Status
}, bool) {
	var se interface {
		error
		GRPCStatus() *status.Status
	}
	return se, errors.As(err, &se)
}

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrInterrupted):
		return ExitInterrupted
	case errors.Is(err, ErrUsage), errors.Is(err, ErrInvalidArgument):
		return ExitUsage
	case errors.Is(err, ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrUnavailable):
		return ExitUnavailable
	case errors.Is(err, backend.ErrStartFailed), errors.Is(err, backend.ErrGaveUp),
		errors.Is(err, backend.ErrExited), errors.Is(err, backend.ErrClosed):
		return ExitUnavailable
	}
	if _, ok := grpcStatus(err); ok {
		switch status.Code(err) {
		case codes.InvalidArgument, codes.OutOfRange:
			return ExitUsage
		case codes.NotFound:
			return ExitNotFound
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return ExitUnavailable
		}
	}
	return ExitFailure
}

// codeReasons prefixes a backend error's description with a readable reason.
var codeReasons = map[codes.Code]string{
	codes.InvalidArgument:   "invalid argument: ",
	codes.OutOfRange:        "invalid argument: ",
	codes.NotFound:          "not found: ",
	codes.Unavailable:       "backend unavailable: ",
	codes.DeadlineExceeded:  "timed out: ",
	codes.ResourceExhausted: "backend busy: ",
	codes.Canceled:          "cancelled: ",
	codes.Unimplemented:     "not supported by this backend: ",
	codes.Internal:          "backend error: ",
	codes.Unknown:           "backend error: ",
}

// Message renders an error as one line for stderr (without the "edgellm: "
// prefix): gRPC errors as "<reason>: <description>", a failed backend start
// as its cause and the last line the backend wrote to stderr.
func Message(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrInterrupted) {
		return ErrInterrupted.Error() // whatever it cut short, Ctrl-C was the reason
	}
	msg := err.Error()
	var se *backend.StartError
	if errors.As(err, &se) {
		msg = strings.Replace(msg, se.Error(), startSummary(se), 1)
		msg = "backend unavailable: " + msg
	} else if gs, ok := grpcStatus(err); ok {
		msg = codeReasons[gs.GRPCStatus().Code()] + strings.Replace(msg, gs.Error(), gs.GRPCStatus().Message(), 1)
	}
	return linetail.OneLine(msg)
}

// startSummary is a start error's cause with the last non-empty stderr line.
func startSummary(se *backend.StartError) string {
	for i := len(se.Tail) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(se.Tail[i]); line != "" {
			return se.Err.Error() + ": " + line
		}
	}
	return se.Err.Error()
}
