package cli

import (
	"context"
	"net/http"
	"time"

	"github.com/edgellm/edgellm/internal/backend"
	"github.com/edgellm/edgellm/internal/console"
	"github.com/edgellm/edgellm/internal/openai"
	"github.com/edgellm/edgellm/internal/serve"
	"github.com/edgellm/edgellm/p2p"
)

// newConsole puts serve's web console (the page at "/" and GET /status) in
// front of api: the peers node sees (none without a swarm) and svc's latest
// route. Close stops its samplers.
func newConsole(api http.Handler, metrics *openai.Metrics, key string, node *p2p.Node, svc *serve.Service,
	b backend.Backend) *console.Console {
	o := console.Options{API: api, Metrics: metrics, APIKey: key, Trace: func() (any, bool) {
		t, ok := svc.LastTrace()
		return toTraceJSON(t), ok
	}, BlocksHeld: func(ctx context.Context) (int, bool) { return blocksHeld(ctx, b) }}
	if node != nil {
		o.Self = node.Host().ID().String()
		o.Peers = func(ctx context.Context) any {
			ps, _ := node.Lookup(ctx, "")
			return toPeersJSON(ps)
		}
	}
	return console.New(o)
}

// maxHeldPages bounds one count of the held KV blocks (4096 keys a page).
const maxHeldPages = 64

// blocksHeld counts the KV blocks the backend's prefix cache holds, paging
// through HeldKeys; false when the backend does not answer.
func blocksHeld(ctx context.Context, b backend.Backend) (int, bool) {
	n, after := 0, uint64(0)
	for range maxHeldPages {
		resp, err := b.HeldKeys(ctx, after, 0)
		if err != nil {
			return 0, false
		}
		n += len(resp.GetKeys())
		if !resp.GetMore() {
			break
		}
		after = resp.GetNextSeq()
	}
	return n, true
}

// traceJSON is the latest generation's route in /status: "local", or the
// cluster's stages in infer --json's shape.
type traceJSON struct {
	RequestID string      `json:"request_id"`
	Model     string      `json:"model"`
	Route     string      `json:"route"`
	Stages    []stageJSON `json:"stages"`
	At        time.Time   `json:"at"`
}

func toTraceJSON(t serve.Trace) traceJSON {
	return traceJSON{RequestID: t.RequestID, Model: t.Model, Route: t.Route, Stages: toStagesJSON(t.Stages), At: t.At.UTC()}
}
