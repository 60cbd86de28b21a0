package requester

import (
	"context"
	"errors"

	"github.com/edgellm/edgellm/internal/planner"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// KV-aware routing, one code path for `infer` and `serve`: look the
// prompt's prefix up in the swarm's KV cache before a cluster is chosen
// (LookupPrefix), then let the lookup re-plan (Route): the holders rank
// higher by the prefill time they save, and, the prompt's length known, the
// planner may choose a prefill/decode run.

// ErrPrefixCacheOff: the request asked for no prefix cache
// (no_prefix_cache), so its prompt was not looked up.
var ErrPrefixCacheOff = errors.New("the request turned the prefix cache off")

// LookupPrefix finds the longest prefix of req's prompt the swarm holds for
// a cluster's stages (StagePrefix) and hands the stages its manifest
// (req.KvManifest), so each fetches its own layers' blocks from the holders.
// A miss leaves req unchanged; its Prefix still has PromptTokens when the
// prompt's keys were computed. Holders in distrust (nil: none) are not
// asked; a stage's spot check names bad ones (Distrust.Report).
func LookupPrefix(ctx context.Context, index PrefixIndex, keyer PromptKeyer, req *pb.GenerateRequest, distrust *Distrust) (Prefix, error) {
	if req.GetNoPrefixCache() {
		return Prefix{}, ErrPrefixCacheOff
	}
	prefix, err := StagePrefix(ctx, index, keyer, req, distrust)
	if err != nil {
		return prefix, err
	}
	req.KvManifest = prefix.Manifest
	return prefix, nil
}

// Route re-plans p for a prompt whose lookup found prefix: the holders
// ranked higher (Prefer), then the planner's choice of a prefill/decode run
// for the prompt's length (ChooseMode; not with NoPD or forced P/D peers).
// A prompt of unknown length (no lookup) keeps p.
func (r *Requester) Route(p *Planned, prefix Prefix, answerTokens int) *Planned {
	if prefix.PromptTokens == 0 {
		return p
	}
	p = r.Prefer(p, prefix, answerTokens)
	return r.ChooseMode(p, planner.Shape{PromptTokens: prefix.PromptTokens, CachedTokens: prefix.Tokens,
		AnswerTokens: answerTokens})
}

// HolderIDs are prefix's holders as peer id strings (infer --json's
// cached_from, serve's metric labels).
func (p Prefix) HolderIDs() []string {
	out := make([]string, 0, len(p.Holders))
	for _, h := range p.Holders {
		out = append(out, h.String())
	}
	return out
}
