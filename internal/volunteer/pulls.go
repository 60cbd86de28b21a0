package volunteer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/edgellm/edgellm/p2p"
)

// PullFunc fetches the model ask names from one of its holders into this
// machine's store, verified and installed whole, within the worker's disk
// budget (the CLI runs `model pull`'s code); a model over the budget is
// refused before anything is fetched.
type PullFunc func(ctx context.Context, ask p2p.PullAsk) error

// pullHandler is the worker's p2p.PullHandler (worker --accept-pulls): it
// pulls the model, adds it to the served models (loaded on demand, like
// every model but the first), shares it as it shares the others, and
// re-publishes the record, which then lists it.
//
// Decision: a model already served is not pulled again (the request is
// answered at once); an id this worker serves with other weights is refused,
// so a request never swaps a served model for another one.
type pullHandler struct {
	src     *backendSource
	node    interface{ Republish() } // the worker's *p2p.Node
	pull    PullFunc
	publish PublishFunc // nil: the pulled model is served, not shared
	log     *slog.Logger
}

var _ p2p.PullHandler = (*pullHandler)(nil)

func (h *pullHandler) Pull(ctx context.Context, from peer.ID, ask p2p.PullAsk) error {
	if served, ok := h.src.servedWeights(ctx, ask.ModelID); ok {
		if served != ask.WeightsCID {
			return fmt.Errorf("this worker serves %s with other weights (%s)", ask.ModelID, served)
		}
		return nil
	}
	if err := h.pull(ctx, ask); err != nil {
		return err
	}
	h.src.addServed(ask.ModelID)
	h.log.Info("pulled a model on request; serving it", "peer", from, "model", ask.ModelID)
	if h.publish != nil {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		dir, err := h.publish(pctx, ask.ModelID)
		cancel()
		if err != nil {
			h.log.Warn("pulled model not shared over IPFS", "model", ask.ModelID, "err", err)
		} else {
			h.src.shared(ask.WeightsCID, dir)
		}
	}
	h.node.Republish()
	return nil
}

// servedWeights is the weights CID of the served model id; false when this
// worker does not serve it.
func (s *backendSource) servedWeights(ctx context.Context, id string) (string, bool) {
	s.mu.Lock()
	served := slices.Contains(s.served, id)
	s.mu.Unlock()
	if !served {
		return "", false
	}
	all, err := s.b.ListModels(ctx)
	if err != nil {
		return "", true
	}
	for _, m := range all {
		if m.GetId() == id {
			return m.GetWeightsCid(), true
		}
	}
	return "", true
}

// addServed adds id to the served models (after those already served).
func (s *backendSource) addServed(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.served, id) {
		s.served = append(s.served, id)
	}
}

// servedIDs are the served models' ids, in order.
func (s *backendSource) servedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.served)
}
