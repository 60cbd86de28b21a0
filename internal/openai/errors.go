package openai

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error types, as OpenAI names them in the "type" field.
const (
	typeInvalidRequest = "invalid_request_error"
	typeRateLimit      = "requests"
	typeServer         = "server_error"
)

// statusClientClosed is what a request abandoned by its client (before any
// byte of the answer) is counted as in the metrics: nginx's 499 "client
// closed request". Nothing reaches the client, which is gone.
const statusClientClosed = 499

// apiError is an HTTP error answered as an OpenAI error object. It is an
// error so that helpers can return it through ordinary error paths.
type apiError struct {
	Status  int
	Message string
	Type    string
	Param   string // "" is written as null
	Code    string // "" is written as null
	// RetryAfter sets the Retry-After header (whole seconds, at least 1).
	RetryAfter time.Duration
	// Header adds response headers (e.g. Allow on a 405).
	Header http.Header
	// cause is what the log shows for a 5xx; never sent to the client.
	cause error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Message, e.cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *apiError) Unwrap() error { return e.cause }

// errorBody is the wire form: {"error": {"message", "type", "param", "code"}}.
type errorBody struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) body() errorBody {
	return errorBody{Error: errorObject{
		Message: e.Message,
		Type:    e.Type,
		Param:   nullable(e.Param),
		Code:    nullable(e.Code),
	}}
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// invalidRequest is a 400 about param (may be "") with OpenAI's code (may be "").
func invalidRequest(param, code, format string, args ...any) *apiError {
	return &apiError{
		Status:  http.StatusBadRequest,
		Type:    typeInvalidRequest,
		Param:   param,
		Code:    code,
		Message: fmt.Sprintf(format, args...),
	}
}

func modelNotFound(id string) *apiError {
	return &apiError{
		Status:  http.StatusNotFound,
		Type:    typeInvalidRequest,
		Param:   "model",
		Code:    "model_not_found",
		Message: fmt.Sprintf("The model '%s' does not exist or is not served by this node or its swarm.", id),
	}
}

func queueFull(model string, retryAfter time.Duration) *apiError {
	return &apiError{
		Status:     http.StatusTooManyRequests,
		Type:       typeRateLimit,
		Code:       "rate_limit_exceeded",
		RetryAfter: retryAfter,
		Message:    fmt.Sprintf("Too many requests for model '%s': its queue is full. Retry after a moment.", model),
	}
}

func unavailable(message string, cause error) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Message: message, cause: cause}
}

// internalError hides the cause from the client; the reference (a request
// id, may be "") lets an operator find it in the log.
func internalError(ref string, cause error) *apiError {
	msg := "The server had an error while processing your request."
	if ref != "" {
		msg = fmt.Sprintf("The server had an error while processing your request (reference %s).", ref)
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: msg, cause: cause}
}

// engineError maps an error from the Engine to the answer for the client.
// ref names the request in the message of a 500.
func engineError(err error, ref string, retryAfter time.Duration) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, ErrNoCapacity) {
		return unavailable(message(err), err)
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange:
		return invalidRequest("", "", "%s", message(err))
	case codes.NotFound:
		return &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: "model_not_found", Message: message(err)}
	case codes.ResourceExhausted:
		return &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "rate_limit_exceeded",
			RetryAfter: retryAfter, Message: message(err)}
	case codes.Unavailable:
		return unavailable(message(err), err)
	}
	return internalError(ref, err)
}

// message is what a client may read of an engine error: the description of
// the gRPC status it wraps (what the backend said, without the wrapping and
// the "rpc error: code = …" prefix), else the error text. status.FromError
// is not used because it gives a wrapped status the whole err.Error().
func message(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if msg := se.GRPCStatus().Message(); msg != "" {
			return msg
		}
	}
	return err.Error()
}

// clientGone reports whether the request's client went away.
func clientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// retryAfterSeconds renders d for the Retry-After header: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
