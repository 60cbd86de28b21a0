package requester

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/p2p"
)

// Requested pulls (worker --accept-pulls, p2p.PullProtocol): when no plan
// can be made because too few workers serve the model, but some peer's
// record shows it holds the model (shares its directory over IPFS: a
// directory CID and an IPFS node in its record), the requester asks an
// accept-pulls worker that does not serve it to pull it from the holders,
// waits until that worker's record lists it, and plans again.
//
// Decisions: "holds" is what a record can prove: a served model with a
// directory CID, from a peer running an IPFS node (a model only on someone's
// disk is invisible, so a model nobody shares gives the planner's error at
// once, nothing asked). Only the holders of the first holder's directory
// CID are named, so the worker fetches one set of bytes. Workers are asked
// in turn (lowest RTT first) until one serves the model; their refusals
// (over the disk budget, busy) end the request as ErrUnavailable with each
// reason. Only a refusal for too few workers (no provider, too many
// stages) triggers a pull: price, latency and busy refusals are not about
// who has the model.

// Puller is a Swarm that can ask accept-pulls workers to pull a model
// (NodeSwarm).
type Puller interface {
	// PullFor asks an accept-pulls worker not serving model to pull it from
	// the peers holding it, and returns that worker's id once it serves it.
	// asked is false when no peer holds the model or no worker accepts
	// pulls (nothing was asked); an error means every worker asked refused.
	PullFor(ctx context.Context, model string) (worker string, asked bool, err error)
}

// servedTimeout bounds waiting for a worker that pulled a model to list it.
const servedTimeout = 30 * time.Second

// pullCandidates picks, from peers' records, what to ask for model: the
// first holder's directory with every holder of it, and the accept-pulls
// workers (reachable, not self, not serving model) in RTT order. ok is
// false when there is no holder or no such worker.
func pullCandidates(peers []p2p.PeerInfo, model string, self peer.ID) (ask p2p.PullAsk, workers []p2p.PeerInfo, ok bool) {
	for _, p := range peers {
		r := p.Record
		if r.PeerID == self {
			continue
		}
		m, held := heldModel(r, model)
		switch {
		case held && (ask.DirCID == "" || ask.DirCID == m.DirCID):
			ask.ModelID, ask.DirCID, ask.WeightsCID = m.ID, m.DirCID, m.WeightsCID
			ask.Holders = append(ask.Holders, r.IPFSDialAddrs()...)
		case r.AcceptPulls && p.Direct && !r.Serves(model):
			workers = append(workers, p)
		}
	}
	ask.Holders = limitAddrs(ask.Holders)
	slices.SortStableFunc(workers, func(a, b p2p.PeerInfo) int {
		if (a.RTT == 0) != (b.RTT == 0) { // unmeasured last
			return map[bool]int{true: 1, false: -1}[a.RTT == 0]
		}
		return int(a.RTT - b.RTT)
	})
	return ask, workers, ask.DirCID != "" && len(workers) > 0
}

// heldModel is r's entry for model when r holds it: shared (a directory
// CID) from an IPFS node it advertises.
func heldModel(r *p2p.Record, model string) (p2p.Model, bool) {
	if len(r.IPFSDialAddrs()) == 0 {
		return p2p.Model{}, false
	}
	for _, m := range r.Models {
		if (m.ID == model || m.WeightsCID == model) && m.DirCID != "" && m.WeightsCID != "" {
			return m, true
		}
	}
	return p2p.Model{}, false
}

// limitAddrs keeps at most the protocol's count of holder addresses.
func limitAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	const most = 16
	if len(addrs) > most {
		return addrs[:most]
	}
	return addrs
}

// askWorkers asks each worker in turn until one pulls the model; the error
// names every refusal.
func askWorkers(ask p2p.PullAsk, workers []p2p.PeerInfo, pull func(peer.ID) error) (string, error) {
	var refused []string
	for _, w := range workers {
		err := pull(w.Record.PeerID)
		if err == nil {
			return w.Record.PeerID.String(), nil
		}
		if errors.Is(err, context.Canceled) {
			return "", err
		}
		refused = append(refused, fmt.Sprintf("%s: %s", w.Record.PeerID, strings.TrimPrefix(err.Error(), p2p.ErrPullRefused.Error()+": ")))
	}
	return "", fmt.Errorf("%w: no worker serves model %s and no worker could pull it (%s)", ErrUnavailable, ask.ModelID, strings.Join(refused, "; "))
}

// pullable: the planner refused for want of workers serving the model.
func pullable(req Request, err error) bool {
	return !req.disaggregated() && (errors.Is(err, planner.ErrNoProvider) || errors.Is(err, planner.ErrTooManyStages))
}

// planAfterPull asks the swarm to have a worker pull req's model when the
// planner refused for want of workers (planErr) and the swarm can; then it
// waits for that worker to list the model and plans again. Without a pull,
// planErr stands.
func (r *Requester) planAfterPull(ctx context.Context, req Request, planErr error, peers []planner.Peer) (planner.Plan, []planner.Peer, error) {
	puller, ok := r.swarm.(Puller)
	if !ok || !pullable(req, planErr) {
		return planner.Plan{}, peers, planErr
	}
	worker, asked, err := puller.PullFor(ctx, req.Model)
	switch {
	case err != nil:
		return planner.Plan{}, peers, err
	case !asked:
		return planner.Plan{}, peers, planErr
	}
	r.log.Info("a worker pulled the model on request", "worker", worker, "model", req.Model)
	deadline := time.Now().Add(servedTimeout)
	for {
		if peers, err = r.discover(ctx, req.DiscoverTimeout); err != nil {
			return planner.Plan{}, nil, err
		}
		peers = r.measured.apply(req.markTrusted(peers))
		if servesModel(peers, worker, req.Model) || time.Now().After(deadline) {
			plan, err := planner.Choose(peers, req.plannerRequest())
			return plan, peers, err
		}
		select {
		case <-ctx.Done():
			return planner.Plan{}, nil, cancelled(ctx, "while waiting for the worker that pulled the model")
		case <-time.After(time.Second):
		}
	}
}

// servesModel: worker id is among peers and lists model.
func servesModel(peers []planner.Peer, id, model string) bool {
	for _, p := range peers {
		if p.ID != id {
			continue
		}
		for _, m := range p.Models {
			if m.ID == model || m.WeightsCID == model {
				return true
			}
		}
	}
	return false
}
