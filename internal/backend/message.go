package backend

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgellm/edgellm/internal/linetail"
)

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

// Message renders an error that may come from a backend as one line: a gRPC
// status as "<reason>: <description>", a failed start as "backend
// unavailable: " with its cause and the last line the backend wrote to
// stderr, anything else as its text. It is what a user (or a peer that asked
// this node's backend for something) is shown.
func Message(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	var se *StartError
	if errors.As(err, &se) {
		msg = strings.Replace(msg, se.Error(), startSummary(se), 1)
		msg = "backend unavailable: " + msg
	} else if gs, ok := grpcStatus(err); ok {
		msg = codeReasons[gs.GRPCStatus().Code()] + strings.Replace(msg, gs.Error(), gs.GRPCStatus().Message(), 1)
	}
	return linetail.OneLine(msg)
}

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

// startSummary is a start error's cause with the last non-empty stderr line.
func startSummary(se *StartError) string {
	for i := len(se.Tail) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(se.Tail[i]); line != "" {
			return se.Err.Error() + ": " + line
		}
	}
	return se.Err.Error()
}
