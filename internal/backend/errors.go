package backend

import "errors"

var (
	// ErrStartFailed reports a backend process that did not reach SERVING:
	// it could not be executed, exited, or timed out. The error is a
	// *StartError carrying the tail of the backend's stderr.
	ErrStartFailed = errors.New("backend failed to start")
	// ErrExited reports a backend process that died while serving a request;
	// the error also wraps the request's gRPC UNAVAILABLE status.
	ErrExited = errors.New("backend exited")
	// ErrGaveUp reports a backend that kept dying: the supervisor stopped
	// restarting it after too many restarts in a minute.
	ErrGaveUp = errors.New("backend keeps exiting, not restarting")
	// ErrClosed reports a request made after Close.
	ErrClosed = errors.New("backend closed")
	// ErrInvalidOption reports a bad supervisor option.
	ErrInvalidOption = errors.New("invalid backend option")
)
