package requester

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgellm/edgellm/internal/planner"
)

// Sentinel errors: every refusal or failure of a request wraps one of them
// (check with errors.Is); a backend's own error (a gRPC status) is returned
// as it is.
//
// Decision: the texts are the words a user has always seen at the front of
// these messages ("not found: …", "unavailable: …"), so the CLI shows the
// errors as they are. A planner refusal of the request's shape (more stages
// than workers, a negative limit) keeps the planner's own text and matches
// ErrInvalidRequest and the planner's sentinel.
var (
	// ErrInvalidRequest: the request cannot be served as asked (too many
	// stages, prefill and decode peers with different weights, ...).
	ErrInvalidRequest = errors.New("invalid argument")
	// ErrNotFound: nothing in the swarm serves what was asked (the model, a
	// named peer).
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the swarm cannot serve the request now: every provider
	// is busy, a worker refused to join, or a worker was lost and could not
	// be replaced. Also a closed cluster's.
	ErrUnavailable = errors.New("unavailable")
	// ErrCancelled: the caller's context ended (in the CLI: Ctrl-C).
	ErrCancelled = errors.New("cancelled")
)

// errClosed is Generate's error on a closed cluster, and Err's after Close.
var errClosed = fmt.Errorf("%w: the cluster is closed", ErrUnavailable)

// cancelled is the error for work cut short by ctx while doing what.
func cancelled(ctx context.Context, what string) error {
	return fmt.Errorf("%w: %s: %w", ErrCancelled, what, context.Cause(ctx))
}

// planError maps the planner's refusals over peers found to the package's
// sentinels; other limits (memory, price, latency) are returned as they are.
func planError(err error, peers int) error {
	switch {
	case errors.Is(err, planner.ErrInvalidRequest), errors.Is(err, planner.ErrTooManyStages):
		return &refusal{kind: ErrInvalidRequest, err: err}
	case errors.Is(err, planner.ErrDifferentWeights):
		return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	case errors.Is(err, planner.ErrUnknownPeer):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, planner.ErrNoProvider), errors.Is(err, planner.ErrNoTrustedPeer):
		return fmt.Errorf("%w: %w (%d workers found)", ErrNotFound, err, peers)
	case errors.Is(err, planner.ErrBusy):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// refusal is an error with err's text that also matches kind.
type refusal struct{ kind, err error }

func (r *refusal) Error() string   { return r.err.Error() }
func (r *refusal) Unwrap() []error { return []error{r.kind, r.err} }
