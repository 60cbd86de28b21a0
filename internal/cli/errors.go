package cli

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/requester"
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
	// ErrNotFound reports that what was named does not exist: a session.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable reports that something cannot serve now: a session
	// whose cluster was not formed in time.
	ErrUnavailable = errors.New("unavailable")
)

// Errors of the runtime packages keep their own sentinels (and their text:
// "not found: …", "unavailable: …"); ExitCode maps them: the requester's as
// the CLI's of the same name, its ErrCancelled as an interrupt (only Ctrl-C
// ends its context here).

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrInterrupted), errors.Is(err, requester.ErrCancelled):
		return ExitInterrupted
	case errors.Is(err, ErrUsage), errors.Is(err, ErrInvalidArgument), errors.Is(err, requester.ErrInvalidRequest):
		return ExitUsage
	case errors.Is(err, ErrNotFound), errors.Is(err, requester.ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrUnavailable), errors.Is(err, requester.ErrUnavailable):
		return ExitUnavailable
	case errors.Is(err, backend.ErrStartFailed), errors.Is(err, backend.ErrGaveUp),
		errors.Is(err, backend.ErrExited), errors.Is(err, backend.ErrClosed):
		return ExitUnavailable
	}
	switch status.Code(err) { // Unknown for an error that is no gRPC status
	case codes.InvalidArgument, codes.OutOfRange:
		return ExitUsage
	case codes.NotFound:
		return ExitNotFound
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return ExitUnavailable
	}
	return ExitFailure
}

// Message renders an error as one line for stderr (without the "edgellm: "
// prefix): "interrupted" for whatever Ctrl-C cut short, else as
// backend.Message does (gRPC errors as "<reason>: <description>", a failed
// backend start as its cause and the backend's last stderr line).
func Message(err error) string {
	if errors.Is(err, ErrInterrupted) {
		return ErrInterrupted.Error() // whatever it cut short, Ctrl-C was the reason
	}
	return backend.Message(err)
}
