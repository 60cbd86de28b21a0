package requester

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/edgellm/edgellm/internal/planner"
)

// DefaultDiscoverTimeout is how long Plan looks for workers when the
// request does not say.
const DefaultDiscoverTimeout = 10 * time.Second

// Requester plans requests over a swarm and forms their clusters.
type Requester struct {
	swarm    Swarm
	log      *slog.Logger
	measured measuredSpeeds
	dropped  droppedWorkers
}

// Option configures a Requester.
type Option func(*Requester)

// WithLogger receives the requester's lines (clusters formed, failovers,
// refused replacements). Default: discarded.
func WithLogger(l *slog.Logger) Option {
	return func(r *Requester) { r.log = l }
}

// New is a requester over swarm.
func New(swarm Swarm, opts ...Option) *Requester {
	r := &Requester{swarm: swarm, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Request is what a caller asks of the swarm: a model and the limits of its
// plan.
type Request struct {
	// Model is the model id (or weights CID). Required.
	Model string
	// Stages splits the model across this many workers; 0 (auto) picks one
	// worker when one can hold it.
	Stages int
	// MaxTokenLatency and MaxPricePer1kMicros bound the plan; 0 = no limit.
	MaxTokenLatency     time.Duration
	MaxPricePer1kMicros uint64
	// PrefillPeer and DecodePeer (peer ids, both or neither) ask for a
	// prefill/decode run: the prompt on one, the decode on the other
	// (planner.ChoosePD).
	PrefillPeer, DecodePeer string
	// AnswerTokens the request expects (its max tokens; 0 = unknown): a
	// worker that must load the model first pays the load spread over them
	// (planner.Request.AnswerTokens).
	AnswerTokens int
	// NoPD forbids a prefill/decode plan the planner would choose itself
	// (ChooseMode); PrefillPeer and DecodePeer still force one.
	NoPD bool
	// DiscoverTimeout bounds the look for workers. Default
	// DefaultDiscoverTimeout.
	DiscoverTimeout time.Duration
	// RayAddress is the IP the Ray head binds to, where workers reach it.
	// Default: the swarm's ReachableIP.
	RayAddress string
	// TrustedPeers, when set, are the only workers (peer ids, comma-separated)
	// a plan, a failover or a P/D run may use: the planner's trusted-only mode
	// (planner.ErrNoTrustedPeer when none of them serves the model). A string,
	// not a slice, so that a Request stays comparable.
	TrustedPeers string
}

// disaggregated reports whether the request asks for a prefill/decode run.
func (r Request) disaggregated() bool { return r.PrefillPeer != "" || r.DecodePeer != "" }

func (r Request) plannerRequest() planner.Request {
	return planner.Request{Model: r.Model, Stages: r.Stages, MaxTokenLatency: r.MaxTokenLatency,
		MaxPricePer1kMicros: r.MaxPricePer1kMicros, TrustedOnly: r.TrustedPeers != "", AnswerTokens: max(r.AnswerTokens, 0)}
}

// markTrusted marks the peers the request trusts (planner.Peer.Trusted).
func (r Request) markTrusted(peers []planner.Peer) []planner.Peer {
	trusted := strings.Split(r.TrustedPeers, ",")
	for i := range peers {
		peers[i].Trusted = r.TrustedPeers != "" && slices.Contains(trusted, peers[i].ID)
	}
	return peers
}

// Planned is a request planned over the workers found: what Form forms.
type Planned struct {
	Request Request
	Plan    planner.Plan
	// RTTs are the measured RTTs of the workers found, by peer id.
	RTTs map[string]time.Duration
	// Prefer is the rank bonus of peers holding the prompt's cached prefix
	// (planner.Request.Prefer) the plan was made with; nil: none.
	Prefer map[string]time.Duration
	// peers are the workers found, for Prefer's re-plan.
	peers []planner.Peer
}

// Plan discovers the swarm's workers and plans req over them. A refusal
// wraps ErrInvalidRequest, ErrNotFound or ErrUnavailable (see planError);
// ctx ending is ErrCancelled.
func (r *Requester) Plan(ctx context.Context, req Request) (*Planned, error) {
	if req.DiscoverTimeout <= 0 {
		req.DiscoverTimeout = DefaultDiscoverTimeout
	}
	peers, err := r.discover(ctx, req.DiscoverTimeout)
	peers = r.measured.apply(req.markTrusted(peers))
	if err != nil {
		return nil, err
	}
	var plan planner.Plan
	if req.disaggregated() {
		plan, err = planner.ChoosePD(peers, req.plannerRequest(), req.PrefillPeer, req.DecodePeer)
	} else {
		plan, err = planner.Choose(peers, req.plannerRequest())
		if err != nil { // too few workers serve it: maybe one can pull it (pulls.go)
			plan, peers, err = r.planAfterPull(ctx, req, err, peers)
		}
	}
	if err != nil {
		return nil, planError(err, len(peers))
	}
	return &Planned{Request: req, Plan: plan, RTTs: rtts(peers), peers: peers}, nil
}

// ChooseMode re-plans p as a prefill/decode run when the planner's
// expected-latency arithmetic says it pays for this request's shape
// (planner.ChooseMode: a long prompt, a faster prefill peer or a busy best
// decoder). A forced P/D request, NoPD, or no gain keep p.
func (r *Requester) ChooseMode(p *Planned, shape planner.Shape) *Planned {
	if p.Request.disaggregated() || p.Request.NoPD {
		return p
	}
	req := p.Request.plannerRequest()
	req.Prefer = p.Prefer
	plan, pd, err := planner.ChooseMode(p.peers, req, shape)
	if err != nil || !pd {
		return p
	}
	chosen := p.Request
	chosen.PrefillPeer, chosen.DecodePeer = plan.Stages[0].PeerID, plan.Stages[1].PeerID
	return &Planned{Request: chosen, Plan: plan, RTTs: p.RTTs, peers: p.peers}
}

// Prefer re-plans p over the same workers with the peers holding the
// prompt's cached prefix ranked higher by the prefill time they save
// (planner.PrefixBonus at each holder's measured prefill speed, spread over
// answerTokens). A P/D request, or no holder among the workers, keeps p.
//
// Decision: the prefix is looked up after the first plan (the prompt's
// keys come from the backend, which starts only once the swarm can serve
// the request), and only re-ranks: a plan the request's limits refuse is
// never chosen for a cache hit.
func (r *Requester) Prefer(p *Planned, prefix Prefix, answerTokens int) *Planned {
	if p.Request.disaggregated() || prefix.Tokens <= 0 {
		return p
	}
	prefer := map[string]time.Duration{}
	for _, w := range p.peers {
		for _, h := range prefix.Holders {
			if w.ID == h.String() {
				prefer[w.ID] = planner.PrefixBonus(prefix.Tokens, w.PrefillTokensPerS, answerTokens)
			}
		}
	}
	if len(prefer) == 0 {
		return p
	}
	req := p.Request.plannerRequest()
	req.Prefer = prefer
	plan, err := planner.Choose(p.peers, req)
	if err != nil {
		return p
	}
	return &Planned{Request: p.Request, Plan: plan, RTTs: p.RTTs, Prefer: prefer, peers: p.peers}
}

// discover asks the swarm for the workers that can be planned.
func (r *Requester) discover(ctx context.Context, timeout time.Duration) ([]planner.Peer, error) {
	peers := r.swarm.Discover(ctx, timeout)
	if ctx.Err() != nil {
		return nil, cancelled(ctx, "while looking for workers")
	}
	return r.dropped.filter(peers), nil
}

// rtts are the peers' measured RTTs by id.
func rtts(peers []planner.Peer) map[string]time.Duration {
	out := make(map[string]time.Duration, len(peers))
	for _, p := range peers {
		out[p.ID] = p.RTT
	}
	return out
}
