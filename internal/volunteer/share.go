package volunteer

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgellm/edgellm/p2p"
)

// PublishFunc adds a model of the store to this machine's IPFS node and
// returns the CID of its directory (weights, config, tokenizer, manifest).
type PublishFunc func(ctx context.Context, modelID string) (dirCID string, err error)

// publishTimeout bounds adding one model to the IPFS node (a few seconds
// for the embedded model; a large model takes longer).
const publishTimeout = 10 * time.Minute

// shareModels adds every served model (loaded or not) to the IPFS node in the background,
// so that the worker's start does not wait for it; each directory CID goes
// into the record as it comes (then the record is re-published at once).
// A model that cannot be added is served but not shared (a warning says
// why). The returned stop cancels what is still running and waits for it.
func shareModels(ctx context.Context, src *backendSource, node *p2p.Node, publish PublishFunc, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		st, err := src.b.Status(ctx)
		if err != nil {
			log.Warn("models not shared: backend status", "err", err)
			return
		}
		models, err := src.models(ctx, st.GetLoadedModels()) // every served model, loaded or not
		if err != nil {
			log.Warn("models not shared: the store's models", "err", err)
			return
		}
		for _, m := range models {
			pctx, pcancel := context.WithTimeout(ctx, publishTimeout)
			dir, err := publish(pctx, m.GetId())
			pcancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				log.Warn("model not shared over IPFS", "model", m.GetId(), "err", err)
				continue
			}
			src.shared(m.GetWeightsCid(), dir)
			log.Info("model shared over IPFS", "model", m.GetId(), "dir_cid", dir)
			node.Republish()
		}
	}()
	return func() { cancel(); <-done }
}
