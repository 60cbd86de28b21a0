package cli

import (
	"context"
	"net/http"
	"time"

	"github.com/edgellm/edgellm/internal/console"
	"github.com/edgellm/edgellm/internal/openai"
	"github.com/edgellm/edgellm/internal/serve"
	"github.com/edgellm/edgellm/p2p"
)

// newConsole puts serve's web console (the page at "/" and GET /status) in
// front of api: the peers node sees (none without a swarm) and svc's latest
// route. Close stops its samplers.
func newConsole(api http.Handler, metrics *openai.Metrics, key string, node *p2p.Node, svc *serve.Service) *console.Console {
	o := console.Options{API: api, Metrics: metrics, APIKey: key, Trace: func() (any, bool) {
		t, ok := svc.LastTrace()
		return toTraceJSON(t), ok
	}}
	if node != nil {
		o.Self = node.Host().ID().String()
		o.Peers = func(ctx context.Context) any {
			ps, _ := node.Lookup(ctx, "")
			return toPeersJSON(ps)
		}
	}
	return console.New(o)
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
