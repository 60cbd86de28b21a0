package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/internal/planner"
	"github.com/edgellm/edgellm/internal/requester"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// swarmCluster is a cluster infer or a session daemon formed, with the
// throwaway processes it runs on: a client p2p node with an ephemeral
// identity (as peers uses) and this machine's node, whose backend hosts the
// Ray head. Close ends all of them.
type swarmCluster struct {
	*requester.Cluster
	closers []func() // run in reverse order by Close
	// index and keyer find a prompt's cached prefix in the swarm.
	index requester.PrefixIndex
	keyer requester.PromptKeyer
	// cachedFrom are the peers holding the prompt's cached prefix (infer
	// --json's cached_from).
	cachedFrom []string
}

// formCluster forms a cluster for model under d's flags: join the swarm,
// discover and plan, then start the backend and form the cluster on it (a
// request the swarm cannot serve fails before a backend is started). On
// error nothing is left running.
func (app *App) formCluster(ctx context.Context, cfg *config.Config, model string, d *distOptions,
	opts ...requester.ClusterOption) (_ *swarmCluster, err error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	join, err := d.swarm.resolve(cfg, app.stdin)
	if err != nil {
		return nil, err
	}
	listen, err := parseListen(d.listen)
	if err != nil {
		return nil, err
	}
	node, err := app.clientNode(join, listen, d.swarm.noMDNS, d.discoverFor)
	if err != nil {
		return nil, err
	}
	c := &swarmCluster{closers: []func(){func() { node.Close() }}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	swarm, err := requester.NewSwarm(node, app.log)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { swarm.Close() })
	r := requester.New(swarm, requester.WithLogger(app.log))
	planned, err := r.Plan(ctx, d.request(model))
	if err != nil {
		return nil, planError(err)
	}
	n, err := app.openNode(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, func() { app.closeQuietly(n) })
	c.index, c.keyer = swarm, n
	if d.prompt != nil {
		planned = c.preferHolders(ctx, app.log, r, planned, d.prompt)
	}
	c.Cluster, err = r.Form(ctx, n, planned, opts...)
	if err != nil {
		return nil, err
	}
	c.closers = append(c.closers, c.Cluster.Close)
	return c, nil
}

// planError keeps a plan the flags make impossible (more stages than
// workers) the usage error it has always been.
func planError(err error) error {
	if errors.Is(err, planner.ErrTooManyStages) || errors.Is(err, planner.ErrInvalidRequest) {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return err
}

// Close has every worker leave, stops the head, closes the backend and
// the node. Idempotent.
func (c *swarmCluster) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
	c.closers = nil
}

// preferHolders looks req's prompt up in the swarm's KV cache (KV-aware
// routing): the manifest goes into req for the stages to fetch their
// layers' blocks, and the plan is re-ranked so the holders win by the
// prefill time they save; then, knowing the prompt's length, the planner
// may choose a prefill/decode run (requester.ChooseMode; not with --no-pd).
// A failed lookup costs a debug line and keeps the plan.
func (c *swarmCluster) preferHolders(ctx context.Context, log *slog.Logger, r *requester.Requester,
	planned *requester.Planned, req *pb.GenerateRequest) *requester.Planned {
	if req.GetNoPrefixCache() {
		return planned
	}
	answer := int(req.GetSampling().GetMaxTokens())
	prefix, err := requester.StagePrefix(ctx, c.index, c.keyer, req)
	if err != nil {
		log.Debug("kv: no cached prefix from the swarm", "err", err)
	} else {
		log.Info("kv: cached prefix found in the swarm", "peers", prefix.Holders, "blocks", prefix.Blocks)
		req.KvManifest = prefix.Manifest
		for _, h := range prefix.Holders {
			c.cachedFrom = append(c.cachedFrom, h.String())
		}
		planned = r.Prefer(planned, prefix, answer)
	}
	if prefix.PromptTokens == 0 {
		return planned
	}
	chosen := r.ChooseMode(planned, planner.Shape{PromptTokens: prefix.PromptTokens, CachedTokens: prefix.Tokens, AnswerTokens: answer})
	if chosen != planned {
		log.Info("planner: prefill/decode pays for this prompt", "prefill", chosen.Request.PrefillPeer,
			"decode", chosen.Request.DecodePeer, "prompt_tokens", prefix.PromptTokens)
	}
	return chosen
}

// Stages are the cluster's stages in infer --json's shape.
func (c *swarmCluster) Stages() []stageJSON { return toStagesJSON(c.Cluster.Stages()) }

// withInterrupt is ctx that also ends on Ctrl-C.
func (app *App) withInterrupt(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(app.interrupt, cancel)
	return ctx, func() { stop(); cancel() }
}
