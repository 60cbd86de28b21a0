package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/edgellm/edgellm/internal/backend"
	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// allModels is the --model value that names every model in the store.
const allModels = "all"

// servedModels resolves worker's and serve's --model values against the
// backend's models: "all" is every model in the store (in the backend's
// order), a repeated id counts once, and an unknown id is refused (exit 3,
// as infer's). It returns the ids, in order, and their infos.
//
// Decision: every served model must fit the backend's model memory budget
// on its own (backend.model_memory_mb), checked here before anything is
// advertised, so a worker never offers a model it would refuse to load. A
// model not yet in the store (a registry model still to convert) has no
// size yet: its load checks it.
func servedModels(ctx context.Context, b backend.Backend, names []string) ([]string, map[string]*pb.ModelInfo, error) {
	list, err := b.ListModels(ctx)
	if err != nil {
		return nil, nil, err
	}
	byID := map[string]*pb.ModelInfo{}
	for _, m := range list {
		byID[m.GetId()] = m
	}
	var ids []string
	for _, name := range names {
		switch {
		case name == allModels:
			for _, m := range list {
				if m.GetInStore() && !slices.Contains(ids, m.GetId()) {
					ids = append(ids, m.GetId())
				}
			}
		case byID[name] == nil:
			return nil, nil, fmt.Errorf("%w: unknown model %q (edgellm model list shows the store's)", ErrNotFound, name)
		case !slices.Contains(ids, name):
			ids = append(ids, name)
		}
	}
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("%w: --model all, but the model store holds no model", ErrNotFound)
	}
	return ids, byID, checkBudget(ctx, b, ids, byID)
}

// checkBudget refuses a model larger than the whole model memory budget.
func checkBudget(ctx context.Context, b backend.Backend, ids []string, byID map[string]*pb.ModelInfo) error {
	st, err := b.Status(ctx)
	if err != nil {
		return err
	}
	budget := st.GetModelMemoryBudgetBytes()
	for _, id := range ids {
		if size := byID[id].GetWeightsBytes(); budget > 0 && size > budget {
			return fmt.Errorf("%w: model %s needs %d MiB, more than the model memory budget of %d MiB (backend.model_memory_mb)",
				ErrInvalidArgument, id, mib(size), mib(budget))
		}
	}
	return nil
}

func mib(n uint64) uint64 { return (n + 1<<20 - 1) >> 20 }

// prepareModels resolves a worker's --model values, converts into the store
// any served model not in it yet (its size and layers go into the record),
// then loads the first, which measures this machine's speeds. It returns
// the served ids and the first one's info.
func (app *App) prepareModels(b backend.Backend, names []string) ([]string, *pb.ModelInfo, error) {
	ids, infos, err := servedModels(app.interrupt, b, names)
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids[1:] {
		if !infos[id].GetInStore() {
			if _, err := app.loadModel(app.interrupt, b, id); err != nil {
				return nil, nil, err
			}
		}
	}
	info, err := app.loadModel(app.interrupt, b, ids[0])
	return ids, info, err
}

// expandAllModels replaces serve's --model all with every model in the
// store; other ids stay as given (a swarm model need not be in the store).
func (app *App) expandAllModels(b backend.Backend, o *serveOptions) error {
	if !slices.Contains(o.models, allModels) {
		return nil
	}
	stored, _, err := servedModels(app.interrupt, b, []string{allModels})
	if err != nil {
		return err
	}
	var ids []string
	for _, name := range o.models {
		add := []string{name}
		if name == allModels {
			add = stored
		}
		for _, id := range add {
			if !slices.Contains(ids, id) { // "all" twice, or beside one of its models
				ids = append(ids, id)
			}
		}
	}
	o.models = ids
	return nil
}
