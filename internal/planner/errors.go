package planner

import "errors"

// Sentinel errors of the planner. Choose and ChoosePD wrap them with %w and
// a reason that names the model and the numbers behind the refusal; check
// them with errors.Is.
var (
	// ErrInvalidRequest: an empty model, a negative stage count or limit, or
	// peers that are listed twice or claim to be the requester twice.
	ErrInvalidRequest = errors.New("invalid plan request")
	// ErrNoProvider: no peer serves the model (or the pinned weights), or no
	// peer holds some layer of it.
	ErrNoProvider = errors.New("model not served")
	// ErrTooManyStages: more stages asked for than there are peers serving
	// the model (or within the limits), or than the model has layers.
	ErrTooManyStages = errors.New("too many stages")
	// ErrBusy: every peer serving the model is at its session limit.
	ErrBusy = errors.New("all providers busy")
	// ErrNoTrustedPeer: trusted peers only, and none serving the model is.
	ErrNoTrustedPeer = errors.New("no trusted provider")
	// ErrNoPeerWithinPrice: every peer serving the model asks more than the
	// request's price limit.
	ErrNoPeerWithinPrice = errors.New("no provider within the price limit")
	// ErrInsufficientMemory: the eligible peers together have too little
	// free memory for the model.
	ErrInsufficientMemory = errors.New("not enough memory")
	// ErrNoChain: memory suffices in total but no chain of the asked length
	// can hold the layers (each stage needs whole, contiguous layers inside
	// a range its peer advertises).
	ErrNoChain = errors.New("no chain of peers holds the model")
	// ErrLatencyLimit: every possible plan is slower per token than the
	// request's latency limit.
	ErrLatencyLimit = errors.New("over the latency limit")
	// ErrUnknownPeer: a peer the request names (ChoosePD's prefill or
	// decode peer) is not among the peers given.
	ErrUnknownPeer = errors.New("unknown peer")
	// ErrDifferentWeights: ChoosePD's prefill and decode peers hold
	// different weights for the model.
	ErrDifferentWeights = errors.New("the prefill and decode peers hold different weights")
)
