package openai

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxHolderLabels bounds the holder label of
// edgellm_cached_prompt_tokens_by_holder_total: the first this many peers
// seen get their own series, later ones count under HolderOther, so a large
// (or hostile) swarm cannot grow the registry without bound.
const MaxHolderLabels = 32

// HolderOther is the holder label of every peer past MaxHolderLabels.
const HolderOther = "other"

// holderTokens counts the prompt tokens taken from the swarm's KV cache by
// the peer whose blocks held them (KV-aware routing's "from whom").
type holderTokens struct {
	vec *prometheus.CounterVec

	mu   sync.Mutex
	seen map[string]bool
}

func newHolderTokens(f factory) *holderTokens {
	return &holderTokens{seen: map[string]bool{},
		vec: f.counterVec("edgellm_cached_prompt_tokens_by_holder_total",
			"Prompt tokens taken from the swarm's KV cache, by the peer holding the blocks (a split's "+
				"prefix counts for each layer range's holder; at most 32 peers, the rest as \"other\").", "holder")}
}

// label is holder's label value: its id while fewer than MaxHolderLabels
// ids have been seen, else HolderOther.
func (h *holderTokens) label(holder string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[holder] {
		return holder
	}
	if len(h.seen) >= MaxHolderLabels {
		return HolderOther
	}
	h.seen[holder] = true
	return holder
}

// AddCachedFrom counts tokens prompt tokens of one generation as taken from
// the KV blocks of each of holders.
func (m *Metrics) AddCachedFrom(holders []string, tokens int) {
	if tokens <= 0 {
		return
	}
	for _, h := range holders {
		m.holders.vec.WithLabelValues(m.holders.label(h)).Add(float64(tokens))
	}
}
